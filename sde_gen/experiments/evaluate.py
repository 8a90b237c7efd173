"""The evaluation loops: `evaluate(settings, workdir)` (`--mode=eval`) and
`sample(settings, workdir)` (`--mode=sample`).

Both read the workdir's checkpoints without changing them (safe while a training runs
there), only complete and verified ones: `eval.checkpoint` "latest" takes the newest
checkpoint that verifies (falling back past corrupt ones, saying so), "all" every one that
verifies, a step number that one. The experiment object does the work for each checkpoint.
"""

from __future__ import annotations

from collections.abc import Iterator

import jax
from absl import logging

from .checkpoints import CheckpointStore, CorruptCheckpointError
from .config import ConfigError, Settings, check_same_experiment, load
from .kinds import make_experiment


def checkpoint_params(experiment, workdir: str, which) -> Iterator[tuple[int, object]]:
    """`(step, EMA parameters)` of the verified checkpoints `which` selects."""
    store = CheckpointStore(workdir, read_only=True)
    steps = store.steps()
    if not steps:
        raise FileNotFoundError(f"no checkpoints in {workdir}: train first (--mode=train)")
    abstract = experiment.init_state(jax.random.key(0))
    if which == "latest":
        step, state, _ = store.restore_latest(abstract, log=logging.warning)
        yield step, state.ema_params
        return
    if which != "all":
        if which not in steps:
            raise ConfigError(
                f"config.eval.checkpoint={which!r}: no such checkpoint in {workdir}; have {steps}"
            )
        steps = [which]
    for step in steps:
        try:
            state, _ = store.restore(step, abstract)
        except (CorruptCheckpointError, FileNotFoundError) as error:
            if which != "all":
                raise
            logging.warning("skipping step %d: %s", step, error)
            continue
        yield step, state.ema_params


def latest_params(experiment, workdir: str) -> tuple[int, object]:
    """`(step, EMA parameters)` of the newest verified checkpoint of `workdir`."""
    return next(checkpoint_params(experiment, workdir, "latest"))


def _run(settings: Settings, workdir: str, mode: str) -> list:
    settings = load(settings)
    experiment = make_experiment(settings)
    experiment.check_mode(mode)
    if jax.process_count() > 1 and mode not in experiment.multi_process_modes:
        raise ConfigError(
            f"--mode={mode} of this experiment ({type(experiment).__name__}) runs in one "
            "process: start it without --num_processes / --distributed"
        )
    has = CheckpointStore(workdir, read_only=True).has_checkpoints()
    check_same_experiment(settings, workdir, has_checkpoints=has)
    experiment.prepare(workdir, mode)
    run = experiment.evaluate if mode == "eval" else experiment.sample
    return [run(workdir, step, params) for step, params in checkpoint_params(
        experiment, workdir, settings.eval.checkpoint
    )]  # fmt: skip


def evaluate(settings: Settings, workdir: str) -> list[dict]:
    """`--mode=eval`: a report per selected checkpoint (sample quality and bits/dim of a
    score model, accuracy against the noise level of a classifier, the bound K of a 2015
    chain), each written to `<workdir>/eval/report_*.json`."""
    return _run(settings, workdir, "eval")


def sample(settings: Settings, workdir: str) -> list[str]:
    """`--mode=sample`: samples and figures of each selected checkpoint (or, with
    `sampling.task`, inpainting / colorization); returns their folders."""
    return _run(settings, workdir, "sample")
