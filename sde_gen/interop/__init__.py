"""Readers of checkpoints made by other libraries, into sde_gen's networks.

- `score_sde`: score_sde's Flax checkpoints and score_sde_pytorch's `.pth` checkpoints as
  NCSN++ / DDPM++ / DDPM variables (`load_checkpoint`), with the score settings and
  network options that reproduce the reference (`score_settings`, `network_options`).
- `adm`: guided-diffusion's (ADM's) diffusion models and noise-conditional classifiers.

See docs/interop.md for the commands and the measured agreement.
"""

from __future__ import annotations

from .score_sde import (
    FORMATS,
    CheckpointFormatError,
    CheckpointMismatch,
    ImportedCheckpoint,
    load_checkpoint,
    network_options,
    score_settings,
)

__all__ = [
    "FORMATS",
    "CheckpointFormatError",
    "CheckpointMismatch",
    "ImportedCheckpoint",
    "load_checkpoint",
    "network_options",
    "score_settings",
]
