"""Command-line entry point, as in score_sde: `sde-gen` once installed (also
`python -m sde_gen`, or `python launch.py` in a checkout):

    sde-gen --config=vp_cifar --mode=train --workdir=runs/vp_cifar
    sde-gen --config=configs/vp_cifar.py --mode=eval --workdir=runs/vp_cifar

`--config` takes a config file, a workdir's `config.json`, or a shipped config by name
(`vp_digits`, or `configs/vp_digits.py` as the docs write it, which also works outside a
checkout). Any config value can be overridden on the command line, e.g.
`--config.training.n_iters=500 --config.training.batch_size=64`. A killed run restarted
with the same command resumes from its newest verified checkpoint in `--workdir`. A bad
config file, key or value is reported in one line before any work starts.

A multi-process run (several hosts, or several processes on one) runs the same command in
every process with `--coordinator_address=HOST:PORT --num_processes=N --process_id=I`, or
with `--distributed` alone where JAX detects the cluster (SLURM, TPU, Kubernetes); see
`sde_gen.distributed` and docs/scaling.md.
"""

import logging as std_logging
import os
import sys
import traceback

from absl import app, flags, logging

from . import distributed, experiments

flags.DEFINE_string(
    "config", None,
    "experiment config: a file (configs/*.py), a workdir's config.json, or a shipped config "
    "by name (vp_digits)",
)  # fmt: skip
flags.DEFINE_string("workdir", None, "directory for checkpoints, metrics and samples")
flags.DEFINE_enum(
    "mode", "train", ["train", "eval", "sample", "import"],
    "train; eval (sample quality and bits/dim of the workdir's checkpoints, a JSON report "
    "each); sample (samples and grids only); import (config.interop.checkpoint, a score_sde "
    "or score_sde_pytorch checkpoint, as the workdir's checkpoint)",
)  # fmt: skip
# a multi-process run: jax.distributed.initialize's own arguments, or its cluster detection
flags.DEFINE_string(
    "coordinator_address", None,
    "multi-process run: HOST:PORT of process 0's coordination service (every process the same)",
)  # fmt: skip
flags.DEFINE_integer("num_processes", None, "multi-process run: how many processes")
flags.DEFINE_integer("process_id", None, "multi-process run: this process's index in [0, N)")
flags.DEFINE_bool(
    "distributed", False,
    "multi-process run with JAX's cluster detection (SLURM, TPU, Kubernetes) instead of the "
    "three flags above",
)  # fmt: skip
flags.mark_flags_as_required(["config", "workdir"])
FLAGS = flags.FLAGS
OVERRIDE = "--config."


def parse_flags(argv: list[str]) -> dict:
    """absl's flags, with the `--config.<key>=<value>` overrides taken out first: returns
    `{"argv": rest, "overrides": {key: text}}`."""
    overrides, rest, i = {}, [], 0
    while i < len(argv):
        arg = argv[i]
        if arg.startswith(OVERRIDE):
            key, eq, text = arg[len(OVERRIDE) :].partition("=")
            if not eq:  # "--config.key value"
                if i + 1 >= len(argv):
                    sys.exit(f"FATAL: {arg} needs a value (--config.key=value)")
                i, text = i + 1, argv[i + 1]
            overrides[key] = text
        else:
            rest.append(arg)
        i += 1
    try:
        return {"argv": FLAGS(rest), "overrides": overrides}
    except flags.Error as error:
        sys.exit(f"FATAL Flags parsing error: {error}\nPass --helpshort or --helpfull for help.")


def _quiet_libraries(record) -> bool:
    """Keep warnings from everywhere but info lines only from this project (orbax logs
    every step of every save at info level)."""
    return record.levelno >= std_logging.WARNING or "orbax" not in record.pathname


def _main(parsed):
    logging.get_absl_handler().addFilter(_quiet_libraries)
    if len(parsed["argv"]) > 1:
        raise app.UsageError(f"unexpected arguments: {' '.join(parsed['argv'][1:])}")
    from .experiments import config as config_lib

    try:
        distributed.check_flags(FLAGS.coordinator_address, FLAGS.num_processes, FLAGS.process_id)
        config = config_lib.load_file(FLAGS.config, parsed["overrides"])
        # the one place a multi-process run starts, before anything else uses JAX
        distributed.initialize(
            FLAGS.coordinator_address, FLAGS.num_processes, FLAGS.process_id,
            auto=FLAGS.distributed or bool(config.get("distributed", False)),
        )  # fmt: skip
        if not distributed.is_main():  # one process's progress lines are enough
            logging.set_verbosity(logging.WARNING)
        settings = config_lib.load(config)
    except (config_lib.ConfigError, distributed.DistributedSetupError) as error:
        raise app.UsageError(str(error)) from None
    try:
        experiments.run(FLAGS.mode, settings, FLAGS.workdir)
    except experiments.UserError as error:  # a refused run: one line, no traceback
        _exit(f"FATAL: {error}")
    except BaseException:
        if distributed.jax.process_count() == 1:
            raise
        traceback.print_exc()
        _exit("FATAL: this process failed (the traceback above)")
    distributed.stop_watchdog()


def _exit(message: str) -> None:
    """Stop with `message`. In a multi-process run at once, without waiting in the
    runtime's shutdown for processes that wait in turn for this one: they see it gone and
    stop too (`sde_gen.distributed`)."""
    if distributed.jax.process_count() == 1:
        sys.exit(message)
    print(message, file=sys.stderr, flush=True)
    os._exit(1)


def main(argv: list[str] | None = None) -> None:
    """The command line (`sde-gen`, `python -m sde_gen`, `python launch.py`): parses `argv`
    (`sys.argv` by default) and runs the mode; exits non-zero with one line on bad input."""
    app.run(_main, argv=argv, flags_parser=parse_flags)


if __name__ == "__main__":
    main()
