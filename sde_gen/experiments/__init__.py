"""The runners: from a config to trained, evaluated and sampled experiments.

- `config`: the config read once into typed, frozen settings, with every check;
- `state`: the train state, the optimizer and the data-parallel step factories;
- `checkpoints`: verified checkpoints (checksums, fallback, no non-finite state) and the
  workdir lock;
- `base`, `kinds`: the experiment interface and the registry of kinds: `score_model`
  (score networks), `classifier` (noise-conditional classifiers), and the 2015 chain
  (`sde_gen.dpm2015.experiment`);
- `quality`, `inverse`, `reporting`: sample quality from arrays, inpainting and
  colorization, progress lines, metrics and reports;
- `train`, `evaluate`: the loops; `importing`: a score_sde checkpoint as a workdir.

    settings = experiments.load(config)            # ConfigError before any work
    experiments.run("train", settings, workdir)    # or "eval", "sample", "import"
"""

from __future__ import annotations

from ..data import DataNotPreparedError
from ..interop import CheckpointFormatError, CheckpointMismatch
from . import evaluate, importing, train
from .checkpoints import (
    CheckpointMismatchError,
    CheckpointSaveError,
    NoValidCheckpointError,
    WorkdirLockedError,
)
from .config import ConfigError, Settings, load
from .train import NonFiniteLossError, train_and_evaluate

MODES = {
    "train": train.train_and_evaluate,
    "eval": evaluate.evaluate,
    "sample": evaluate.sample,
    "import": importing.import_checkpoint,
}

#: what a run refuses with one clear line (no traceback) at the command line (a missing
#: file or workdir without checkpoints is named by its path)
UserError = (
    ConfigError,
    FileNotFoundError,
    DataNotPreparedError,
    WorkdirLockedError,
    NoValidCheckpointError,
    CheckpointMismatchError,
    CheckpointSaveError,
    NonFiniteLossError,
    CheckpointFormatError,
    CheckpointMismatch,
)


def run(mode: str, settings, workdir: str):
    """Run `mode` ("train", "eval", "sample" or "import") of `settings` (or a ConfigDict)
    in `workdir`."""
    if mode not in MODES:
        raise ConfigError(f"unknown mode {mode!r}; choose one of {', '.join(MODES)}")
    return MODES[mode](load(settings), workdir)


__all__ = [
    "ConfigError",
    "MODES",
    "NonFiniteLossError",
    "Settings",
    "UserError",
    "evaluate",
    "load",
    "run",
    "train",
    "train_and_evaluate",
]
