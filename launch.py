"""Command-line entry point, as in score_sde:

    python launch.py --config=configs/vp_cifar.py --mode=train --workdir=runs/vp_cifar
    python launch.py --config=configs/vp_cifar.py --mode=eval --workdir=runs/vp_cifar
    python launch.py --config=configs/ve_cifar.py --mode=import --workdir=runs/ve_released \
        --config.interop.checkpoint=RUN/checkpoints/checkpoint_<n>  # score_sde's, as a workdir

Any config value can be overridden on the command line, e.g.
`--config.training.n_iters=500 --config.training.batch_size=64`. A killed run restarted
with the same command resumes from its newest verified checkpoint in `--workdir`. A bad
config file, key or value is reported in one line before any work starts.
"""

import logging as std_logging
import sys

from absl import app, flags, logging

flags.DEFINE_string("config", None, "experiment config file (configs/*.py) or a workdir's config.json")
flags.DEFINE_string("workdir", None, "directory for checkpoints, metrics and samples")
flags.DEFINE_enum(
    "mode", "train", ["train", "eval", "sample", "import"],
    "train; eval (sample quality and bits/dim of the workdir's checkpoints, a JSON report "
    "each); sample (samples and grids only); import (config.interop.checkpoint, a score_sde "
    "or score_sde_pytorch checkpoint, as the workdir's checkpoint)",
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


def main(parsed):
    logging.get_absl_handler().addFilter(_quiet_libraries)
    if len(parsed["argv"]) > 1:
        raise app.UsageError(f"unexpected arguments: {' '.join(parsed['argv'][1:])}")
    from sde_gen import experiments
    from sde_gen.experiments import config as config_lib

    try:
        config = config_lib.load_file(FLAGS.config, parsed["overrides"])
        if config.get("distributed", False):  # the one place a multi-host run starts
            import jax

            jax.distributed.initialize()
        settings = config_lib.load(config)
    except config_lib.ConfigError as error:
        raise app.UsageError(str(error)) from None
    try:
        experiments.run(FLAGS.mode, settings, FLAGS.workdir)
    except experiments.UserError as error:  # a refused run: one line, no traceback
        sys.exit(f"FATAL: {error}")


if __name__ == "__main__":
    app.run(main, flags_parser=parse_flags)
