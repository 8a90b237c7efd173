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
"""

import logging as std_logging
import sys

from absl import app, flags, logging

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
    from . import experiments
    from .experiments import config as config_lib

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


def main(argv: list[str] | None = None) -> None:
    """The command line (`sde-gen`, `python -m sde_gen`, `python launch.py`): parses `argv`
    (`sys.argv` by default) and runs the mode; exits non-zero with one line on bad input."""
    app.run(_main, argv=argv, flags_parser=parse_flags)


if __name__ == "__main__":
    main()
