"""The interface every kind of experiment offers the loops.

An experiment kind (a score model, a noise-conditional classifier, a 2015 chain) is one
class with the same methods: its per-example loss (the train loop wraps it in the
data-parallel step), what a snapshot draws during training, what `--mode=eval` reports
and what `--mode=sample` writes. The loops in `train.py` and `evaluate.py` call these
methods and never ask which kind they hold. A new kind is one new subclass, registered in
`kinds.py`.
"""

from __future__ import annotations

import abc

import jax
import jax.numpy as jnp
import numpy as np

from .. import data as data_lib
from .config import ConfigError, Settings
from .state import LossFn, TrainState, init_state, make_optimizer, make_step


class AbstractExperiment(abc.ABC):
    """One kind of experiment, built from its settings."""

    #: names this kind's eval reports and sample folders (`report_<step>_<tag>.json`)
    tag: str = ""
    #: the modes besides training that share their work over the processes of a
    #: multi-process run (`sde_gen.distributed`); the others run in one process
    multi_process_modes: tuple[str, ...] = ()

    def __init__(self, settings: Settings):
        self.settings = settings
        self.sde = settings.sde
        self.network = settings.model.network()
        self.info = settings.data.info

    # --- training ----------------------------------------------------------------------

    def optimizer(self):
        """score_sde's optimizer from the settings (Adam or AdamW, warm-up, clipping)."""
        o = self.settings.optim
        return make_optimizer(
            lr=o.lr, warmup=o.warmup, grad_clip=o.grad_clip, beta1=o.beta1, eps=o.eps,
            weight_decay=o.weight_decay,
        )  # fmt: skip

    def init_state(self, key: jax.Array) -> TrainState:
        """A fresh train state for this experiment's network and optimizer."""
        x = jnp.zeros((1, *self.info.shape), jnp.float32)
        return init_state(key, self.network, self.optimizer(), x)

    @abc.abstractmethod
    def loss_fn(self) -> LossFn:
        """`loss_fn(params, x, labels, example_keys, dropout_key) -> (loss, metrics)` on one
        device's batch (see `state.make_step`)."""

    def train_step(self):
        """The data-parallel step (to be pmapped) around `loss_fn`."""
        m = self.settings.model
        return make_step(self.loss_fn(), self.optimizer(), m.ema_rate, m.ema_warmup)

    @abc.abstractmethod
    def snapshot(self, workdir: str, step: int, ema_params, key: jax.Array, writer) -> None:
        """What a training snapshot leaves besides the checkpoint (sample grids)."""

    # --- evaluation ----------------------------------------------------------------------

    def check_mode(self, mode: str) -> None:
        """Refuse, before any work, a mode this kind cannot run (default: all run)."""

    def prepare(self, workdir: str, mode: str) -> None:
        """Load or check what every checkpoint's evaluation needs, before the first one."""

    @abc.abstractmethod
    def evaluate(self, workdir: str, step: int, ema_params) -> dict:
        """`--mode=eval` of one checkpoint: write and return its report."""

    @abc.abstractmethod
    def sample(self, workdir: str, step: int, ema_params) -> str:
        """`--mode=sample` of one checkpoint: write its samples and figures; their folder."""

    # --- data --------------------------------------------------------------------------

    def load_split(self, split: str, limit: int | None = None, *, seed: int = 0, **overrides):
        """`(x, labels)` of a split (its first `limit` examples), in order, through the
        experiment's data pipeline (`overrides` as for `sde_gen.data.get_dataset`)."""
        d = self.settings.data
        x, y, _ = data_lib.load_arrays(
            d.dataset, split, limit, seed=seed, **d.options(split, **overrides)
        )
        return x, y


def refuse(mode: str, why: str):
    """The error for a mode a kind cannot run."""
    return ConfigError(f"--mode={mode}: {why}")


def balanced_labels(classes: int, start: int, n: int) -> np.ndarray | None:
    """The classes of samples `start .. start + n - 1`: sample i is drawn for class
    `i mod classes` (balanced classes); None when `classes` is 0."""
    return None if not classes else (start + np.arange(n)) % classes
