"""DDPM++ (Song et al. 2021, Sec. H): NCSN++'s network with DDPM-style choices, the model of
score_sde's VP and sub-VP CIFAR-10 results."""

from __future__ import annotations

from collections.abc import Sequence

from .ncsnpp import NCSNpp


class DDPMpp(NCSNpp):
    """NCSN++ with DDPM++ cont.'s defaults: BigGAN residual blocks without FIR, no input or
    output pyramids, sinusoidal embedding of the time label (999 t), and a noise-predicting
    output (no `scale_by_sigma`). About 62M parameters at the CIFAR-10 size; DDPM++ cont.
    deep is `num_res_blocks=8`."""

    fir: bool = False
    progressive_input: str = "none"
    embedding_type: str = "positional"
    scale_by_sigma: bool = False
    ch_mult: Sequence[int] = (1, 2, 2, 2)
