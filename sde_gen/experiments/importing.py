"""`--mode=import`: a released score_sde or score_sde_pytorch checkpoint, or one of
guided-diffusion's state dicts (an ADM diffusion model or classifier, `interop.format="adm"`),
as an ordinary workdir, which `--mode=sample` and `--mode=eval` (and a resumed
`--mode=train`) then use unchanged; an imported classifier guides through
`sampling.classifier_workdir`.

The checkpoint is read and checked against the configured network before anything is
written: a missing file, a corrupt one, or one whose parameters are not the network's (the
first mismatching parameter is named with both shapes) is one error line. The workdir gets
the config (`config.json`), one verified checkpoint at the imported training step (EMA =
the imported EMA weights; parameters = the raw training weights where the file has them,
else the EMA; a fresh optimizer state) and `imported.json`, naming the source file, its
format and SHA-256.
"""

from __future__ import annotations

import json
import os

import jax
import jax.numpy as jnp
from absl import logging

from .. import data as data_lib
from .. import interop
from ..interop import adm as adm_interop
from .checkpoints import CheckpointStore, WorkdirLock
from .config import ConfigError, Settings, load
from .kinds import make_experiment
from .reporting import write_text
from .state import TrainState

NETWORKS = ("ncsnpp", "ddpmpp")  # what score_sde's checkpoints hold
ADM_NETWORKS = ("adm", "adm_classifier")  # what guided-diffusion's state dicts hold
RECORD = "imported.json"
# A fresh iterator's state (the start of the stream), for a data set that is described but
# not prepared (imagenet64): what `get_dataset(...)[0].get_state()` returns before any batch.
START_OF_STREAM = {"next_index": 0}


def import_checkpoint(settings: Settings, workdir: str) -> TrainState:
    """Convert `settings.interop.checkpoint` for the configured network and write it to
    `workdir` as its one checkpoint; returns the written state."""
    settings = load(settings)
    source = settings.interop
    if source.checkpoint is None:
        raise ConfigError(
            "--mode=import needs config.interop.checkpoint=PATH (a score_sde checkpoint_<n>, "
            "a score_sde_pytorch .pth file or a guided-diffusion .pt / .npz state dict)"
        )
    name = settings.model.name
    adm = name in ADM_NETWORKS
    if source.format == "adm" and not adm:
        raise ConfigError(
            f"config.interop.format='adm' reads guided-diffusion's networks; "
            f"config.model.name={name!r} is not one of {', '.join(ADM_NETWORKS)}"
        )
    if adm and source.format not in ("adm", "auto"):
        raise ConfigError(
            f"config.model.name={name!r} is imported from a guided-diffusion state dict: "
            f"config.interop.format={source.format!r} must be 'adm' (or 'auto')"
        )
    if not adm and name not in NETWORKS:
        raise ConfigError(
            f"--mode=import reads score_sde's NCSN++ / DDPM++ / DDPM networks and "
            f"guided-diffusion's ADM networks; config.model.name={name!r} is not one of "
            f"{', '.join(NETWORKS + ADM_NETWORKS)}"
        )
    if settings.dequantizer.name != "none":
        raise ConfigError("--mode=import: the imported checkpoints hold no learned dequantizer")
    if adm and not source.use_ema:
        raise ConfigError(
            "config.interop.use_ema=False: a guided-diffusion state dict holds one set of "
            "weights (no raw training weights beside them)"
        )

    experiment = make_experiment(settings)
    shape = (1, *experiment.info.shape)
    if adm:
        imported = adm_interop.load_adm_checkpoint(
            source.checkpoint, experiment.network, experiment.info.shape[0]
        )
    else:
        imported = interop.load_checkpoint(
            source.checkpoint,
            experiment.network,
            shape,
            format=source.format,
            use_ema=source.use_ema,
        )
    fresh = jax.eval_shape(experiment.init_state, jax.random.key(settings.seed))
    same = jax.tree_util.tree_structure(fresh.params) == jax.tree_util.tree_structure(
        imported.params
    )
    if not same:  # load_checkpoint checked names and shapes; this is the train state's view
        raise ConfigError(
            f"{source.checkpoint}: the imported parameters do not fit the train state"
        )
    state = TrainState(
        step=jnp.asarray(imported.step, jnp.int32),
        params=imported.params,
        ema_params=imported.ema_params,
        opt_state=experiment.optimizer().init(imported.params),
    )

    os.makedirs(workdir, exist_ok=True)
    with WorkdirLock(workdir):
        store = CheckpointStore(workdir, settings.training.max_to_keep)
        if store.has_checkpoints():
            raise ConfigError(f"{workdir} already holds checkpoints; import into a new --workdir")
        data_state = _data_state(settings)
        write_text(os.path.join(workdir, "config.json"), settings.config_json)
        record = {
            "source": os.path.abspath(imported.path),
            "sha256": imported.sha256,
            "format": imported.format,
            "step": imported.step,
            "use_ema": source.use_ema,
        }
        write_text(os.path.join(workdir, RECORD), json.dumps(record, indent=2))
        store.save("snapshot", imported.step, state, data_state)
    logging.info(
        "imported %s (%s, step %d, sha256 %s) into %s",
        imported.path, imported.format, imported.step, imported.sha256, workdir,
    )  # fmt: skip
    return state


def _data_state(settings: Settings) -> dict:
    """The train iterator's state at the start (resuming training reads it); for a data set
    that is only described (imagenet64 unprepared), the start of its stream."""
    d = settings.data
    try:
        train_it, _ = data_lib.get_dataset(
            d.dataset,
            "train",
            settings.training.batch_size,
            seed=settings.seed,
            **d.options("train"),
        )
    except data_lib.DataNotPreparedError:
        if data_lib.IMAGE_DATASETS[d.dataset].declared is None:
            raise
        return dict(START_OF_STREAM)
    return train_it.get_state()
