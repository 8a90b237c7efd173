"""Command-line entry point, as in score_sde:

    python launch.py --config=configs/vp_cifar.py --mode=train --workdir=runs/vp_cifar
    python launch.py --config=configs/vp_cifar.py --mode=eval --workdir=runs/vp_cifar

Any config value can be overridden on the command line, e.g.
`--config.training.n_iters=500 --config.training.batch_size=64`. A killed run restarted
with the same command resumes from its latest checkpoint in `--workdir`.
"""

import logging as std_logging

from absl import app, flags, logging
from ml_collections import config_flags

config_flags.DEFINE_config_file(
    "config", None, "experiment config file (configs/*.py)", lock_config=True
)
flags.DEFINE_string("workdir", None, "directory for checkpoints, metrics and samples")
flags.DEFINE_enum(
    "mode", "train", ["train", "eval", "sample"],
    "train; eval (sample quality and bits/dim of the workdir's checkpoints, a JSON report "
    "each); sample (samples and grids only)",
)  # fmt: skip
flags.mark_flags_as_required(["config", "workdir"])
FLAGS = flags.FLAGS


def _quiet_libraries(record) -> bool:
    """Keep warnings from everywhere but info lines only from this project (orbax logs
    every step of every save at info level)."""
    return record.levelno >= std_logging.WARNING or "orbax" not in record.pathname


def main(argv):
    logging.get_absl_handler().addFilter(_quiet_libraries)
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {' '.join(argv[1:])}")
    import jax

    from sde_gen import build, evaluate, train

    config = FLAGS.config
    if config.get("distributed", False):
        jax.distributed.initialize()
    logging.info("devices: %s", jax.devices())
    try:
        build.check_config(config)
    except build.ConfigError as error:
        raise app.UsageError(str(error)) from None
    if FLAGS.mode == "train":
        train.train_and_evaluate(config, FLAGS.workdir)
    elif FLAGS.mode == "eval":
        evaluate.evaluate(config, FLAGS.workdir)
    else:
        evaluate.sample(config, FLAGS.workdir)


if __name__ == "__main__":
    app.run(main)
