"""From an experiment config (`ml_collections.ConfigDict`, see `configs/`) to typed, frozen
settings, once, with every check there.

This is the one module below `launch.py` that reads a `ConfigDict`: `load(config)` returns a
`Settings` tree of frozen dataclasses holding plain values and the built maths objects (the
SDE, the sampler, the loss pieces), and raises `ConfigError` naming the config key, its
value and the valid choices on the first bad value, before any data is read or any step is
compiled. Everything below takes `Settings` (or plain arguments).

The config layout follows score_sde (`training`, `sampling`, `data`, `model`, `optim`,
`eval`, `seed`), with two additions to `model`: `output` ("noise", "score" or "x0": what the
network predicts) and `time_input` ("t": the network sees `time_scale * t`; "std": the noise
standard deviation, as NCSN++ with Fourier features does; "discrete": the step index
`n in [0, N-1]` of a `training.sde="vpsde_discrete"` table, as DDPM and ADM networks are
trained). `training.sde` is one of `SDES`: "vpsde_discrete" is the discrete-time table of
`model.num_scales` steps named by `model.beta_schedule` ("linear": DDPM's, from
`model.beta_min` / `model.beta_max`; "cosine": ADM's) as an SDE, "vpsde_cosine" the cosine
schedule in closed form. Every other key of `config.model`
besides the SDE constants, the EMA settings and the score wrapper's is an option of the
network.
"""

from __future__ import annotations

import dataclasses
import difflib
import importlib.util
import json
import math
import os
from collections.abc import Mapping
from types import MappingProxyType
from typing import Any

import ml_collections
import numpy as np

from .. import data as data_lib
from .. import interop, models
from .._checks import choose
from ..dequantization import FlowDequantizer
from ..losses import (
    WEIGHTINGS,
    AbstractTimeSampler,
    DiscreteTime,
    ImportanceTime,
    UniformTime,
    Weighting,
)
from ..metrics import load_reference_stats
from ..sampling import (
    DEFAULT_GUIDANCE_WEIGHT,
    DEFAULT_PARTICLES,
    IMPUTE_METHODS,
    AbstractGaussianPredictor,
    AbstractSampler,
    FastSampler,
    ODESampler,
    PCSampler,
    SDESampler,
    get_fast_solver,
    load_grid,
)
from ..score import COMPUTE_DTYPES, TIME_INPUTS, check_time_input
from ..sde import (
    BETA_SCHEDULES,
    VESDE,
    VPSDE,
    AbstractLinearSDE,
    CosineVPSDE,
    DiscreteVPSDE,
    SubVPSDE,
    discrete_betas,
)

SDES = ("vpsde", "subvpsde", "vesde", "vpsde_discrete", "vpsde_cosine")
OPTIMIZERS = ("adam", "adamw")
SAMPLING_METHODS = ("pc", "ode", "sde", "fast")
FAST_DEFAULT_STEPS = 20
TASKS = ("generate", "inpaint", "colorize")  # what --mode=sample does
INPAINT_MASKS = ("left_half", "right_half", "top_half", "bottom_half", "center", "random")
FEATURES = ("auto", "inception", "classifier", "data")
DIVERGENCES = ("hutchinson", "exact")
SECTIONS = ("training", "sampling", "data", "model", "optim", "eval")
# Keys of config.model that configure the SDE, the EMA or the score wrapper, not the network.
NON_NETWORK_KEYS = frozenset(
    {
        "name",
        "ema_rate",
        "ema_warmup",
        "sigma_min",
        "sigma_max",
        "num_scales",
        "beta_min",
        "beta_max",
        "beta_schedule",
        "output",
        "time_input",
        "time_scale",
    }
)
# What a workdir's checkpoints were trained with, which no later run on it may change.
FIXED_FOR_WORKDIR = ("model", "dequantizer", "training.sde", "data.dataset", "data.image_size")
DEQUANTIZERS = ("none", "flow")
# What --mode=import reads: score_sde's checkpoints, guided-diffusion's state dicts ("adm").
IMPORT_FORMATS = (*interop.FORMATS, "adm")


class ConfigError(ValueError):
    """A config value that cannot work, named by its key."""


# --- reading the ConfigDict ------------------------------------------------------------------


class _Reader:
    """Typed access to a ConfigDict by dotted key, each failure a `ConfigError` naming it."""

    def __init__(self, config: ml_collections.ConfigDict):
        self.config = config

    def get(self, path: str, default: Any = None) -> Any:
        node = self.config
        for part in path.split("."):
            if node is None or not hasattr(node, "keys") or part not in node:
                return default
            node = node[part]
        return default if node is None else node

    def require(self, path: str) -> Any:
        value = self.get(path, _MISSING)
        if value is _MISSING:
            raise ConfigError(f"config.{path} is missing")
        return value

    def integer(self, path: str, default: Any = None, *, low: int = 1) -> int:
        value = self.require(path) if default is None else self.get(path, default)
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < low:
            what = "a positive integer" if low == 1 else f"an integer >= {low}"
            raise ConfigError(f"config.{path} must be {what}; got {value!r}")
        return int(value)

    def number(
        self,
        path: str,
        default: Any = None,
        *,
        low: float | None = None,
        high: float | None = None,
        open_low: bool = False,
        open_high: bool = False,
    ) -> float:
        value = self.require(path) if default is None else self.get(path, default)
        if isinstance(value, bool) or not isinstance(value, (int, float, np.number)):
            raise ConfigError(f"config.{path} must be a number; got {value!r}")
        value = float(value)
        # float32 is what the arrays hold: 1e39 is finite as a Python float, inf in float32
        if not (math.isfinite(value) and abs(value) <= float(np.finfo(np.float32).max)):
            raise ConfigError(f"config.{path} must be finite in float32; got {value!r}")
        bad_low = low is not None and (value <= low if open_low else value < low)
        bad_high = high is not None and (value >= high if open_high else value > high)
        if bad_low or bad_high:
            lo = "" if low is None else ("(" if open_low else "[") + f"{low:g}"
            hi = "" if high is None else f"{high:g}" + (")" if open_high else "]")
            interval = f"{lo or '(-inf'}, {hi or 'inf)'}"
            raise ConfigError(f"config.{path} must lie in {interval}; got {value!r}")
        return value

    def flag(self, path: str, default: bool = False) -> bool:
        value = self.get(path, default)
        if not isinstance(value, (bool, np.bool_)):
            raise ConfigError(f"config.{path} must be True or False; got {value!r}")
        return bool(value)

    def choice(self, path: str, choices, default: Any = None) -> str:
        value = self.require(path) if default is None else self.get(path, default)
        try:
            choose(f"config.{path}", value, dict.fromkeys(choices))
        except ValueError as error:
            raise ConfigError(str(error)) from None
        return value.lower()

    def string(self, path: str) -> str | None:
        value = self.get(path, None)
        if value is not None and not isinstance(value, str):
            raise ConfigError(f"config.{path} must be a string; got {value!r}")
        return value


_MISSING = object()


def _freeze(value):
    if isinstance(value, Mapping):
        return MappingProxyType({k: _freeze(v) for k, v in value.items()})
    if isinstance(value, list):
        return tuple(_freeze(v) for v in value)
    return value


# --- the settings ------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class LossSettings:
    """The objective: weighting, time sampler and reduction."""

    weighting: Weighting
    time_sampler: AbstractTimeSampler
    reduce_mean: bool


@dataclasses.dataclass(frozen=True)
class TrainingSettings:
    batch_size: int
    n_iters: int
    log_freq: int
    snapshot_freq: int
    snapshot_freq_for_preemption: int
    max_to_keep: int
    snapshot_sampling: bool
    snapshot_samples: int
    eps: float
    label_dropout: float
    loss: LossSettings
    compute_dtype: str = "float32"  # the networks' pass (COMPUTE_DTYPES); parameters float32


@dataclasses.dataclass(frozen=True)
class OptimSettings:
    optimizer: str
    lr: float
    warmup: int
    grad_clip: float | None
    beta1: float
    eps: float
    weight_decay: float | None  # None: Adam; a number: AdamW


@dataclasses.dataclass(frozen=True)
class DataSettings:
    dataset: str
    data_dir: str | None
    image_size: int | None
    num_channels: int | None
    random_flip: bool
    uniform_dequantization: bool
    centered: bool
    info: data_lib.DataInfo  # the data set's real shape, levels, size and classes

    def options(self, split: str, **overrides) -> dict:
        """`sde_gen.data.get_dataset` keyword arguments for `split` (flips only in training)."""
        options = dict(
            data_dir=self.data_dir,
            image_size=self.image_size if self.dataset in data_lib.IMAGE_DATASETS else None,
            random_flip=self.random_flip and split == "train",
            dequantize=self.uniform_dequantization,
            centered=self.centered,
        )
        return {**options, **overrides}


@dataclasses.dataclass(frozen=True)
class ModelSettings:
    name: str
    options: Mapping[str, Any]  # the network's keyword arguments
    output: str
    time_input: str
    time_scale: float
    ema_rate: float
    ema_warmup: bool
    num_scales: int | None

    def network(self):
        """The Flax module `name` with its options."""
        return models.get_model(self.name, **self.options)


@dataclasses.dataclass(frozen=True)
class DequantizerSettings:
    """A learned dequantization of discrete data (`sde_gen.dequantization`), trained with
    the score network on the likelihood bound; "none": the data pipeline's own (uniform,
    or none)."""

    name: str = "none"
    features: int = 64
    num_couplings: int = 4

    def module(self) -> FlowDequantizer | None:
        if self.name == "none":
            return None
        return FlowDequantizer(features=self.features, num_couplings=self.num_couplings)


@dataclasses.dataclass(frozen=True)
class GuidanceSettings:
    cfg_weight: float = 0.0
    classifier_scale: float = 0.0
    classifier_workdir: str | None = None

    def describe(self) -> dict:
        out = {}
        if self.cfg_weight:
            out["cfg_weight"] = self.cfg_weight
        if self.classifier_scale:
            out.update(classifier_scale=self.classifier_scale)
            out.update(classifier_workdir=os.path.abspath(self.classifier_workdir))
        return out

    def tag(self) -> str:
        parts = []
        if self.cfg_weight:
            parts.append(f"cfg{self.cfg_weight:g}")
        if self.classifier_scale:
            parts.append(f"cg{self.classifier_scale:g}")
        return "-".join(parts)


@dataclasses.dataclass(frozen=True)
class TaskSettings:
    """`--mode=sample` inpainting or colorization by `sample_impute`'s `method` with the PC
    sampler's predictor (and, except for "smc", its corrector)."""

    task: str  # "inpaint" | "colorize"
    sampler: AbstractSampler  # a PC sampler
    mask: str | None
    examples: int
    split: str
    impute_method: str = "replacement"  # one of IMPUTE_METHODS
    num_particles: int | None = None  # method "smc"
    guidance_weight: float | None = None  # method "reconstruction_guidance"

    def impute_options(self) -> dict:
        """The keyword arguments of `sample_impute` that choose and set the method."""
        options = {"method": self.impute_method}
        if self.num_particles is not None:
            options["num_particles"] = self.num_particles
        if self.guidance_weight is not None:
            options["guidance_weight"] = self.guidance_weight
        return options

    def describe(self) -> dict:
        return {
            "task": self.task,
            "mask": self.mask,
            "examples": self.examples,
            "split": self.split,
            **self.sampler.describe(),
            "impute_method": self.impute_method,
            **{k: v for k, v in self.impute_options().items() if k != "method"},
        }


@dataclasses.dataclass(frozen=True)
class SamplingSettings:
    sampler: AbstractSampler
    guidance: GuidanceSettings
    task: TaskSettings | None  # None: --mode=sample generates


@dataclasses.dataclass(frozen=True)
class EvalSettings:
    checkpoint: str | int  # "latest", "all" or a step
    batch_size: int
    num_samples: int
    enable_sampling: bool
    features: str  # resolved: "inception", "classifier" or "data"
    inception_weights: str | None
    classifier_steps: int
    reference_split: str
    reference_examples: int
    reference_stats: str | None  # a shared statistics file used instead of reference_split
    enable_bpd: bool
    bpd_dataset: str
    bpd_num_examples: int | None
    bpd_batch_size: int
    bpd_repeats: int
    divergence: str
    enable_bound: bool
    bound_samples: int
    bpd_rtol: float
    bpd_atol: float

    def check_feature_weights(self) -> None:
        """Before any sampling: the FID Inception weights exist where sample quality needs
        them, and a reference statistics file (`eval.reference_stats`) is one."""
        weights = self.inception_weights
        if self.features == "inception" and self.enable_sampling:
            if not (weights and os.path.isfile(weights)):
                raise ConfigError(
                    f"config.eval.inception_weights={weights!r}: FID/IS in Inception features "
                    "need the FID Inception weights as a local .npz file "
                    "(eval.inception_weights=PATH), or choose eval.features='classifier' or 'data'"
                )
            if self.reference_stats is not None:
                try:
                    load_reference_stats(self.reference_stats)
                except (OSError, ValueError) as error:
                    fault = str(error).removeprefix(f"{self.reference_stats}: ")
                    raise ConfigError(
                        f"config.eval.reference_stats={self.reference_stats!r}: {fault}"
                    ) from None


@dataclasses.dataclass(frozen=True)
class InteropSettings:
    """What `--mode=import` reads: a score_sde (`checkpoint_<n>`) or score_sde_pytorch
    (`.pth`) checkpoint, or a guided-diffusion state dict (`.pt` / `.npz`, format "adm"),
    its `format` (one of `IMPORT_FORMATS`; "auto" tells them apart, by the file for
    score_sde's networks and by the network for ADM's), and whether the imported EMA is its
    EMA (`use_ema`) or its raw training weights."""

    checkpoint: str | None
    format: str
    use_ema: bool


@dataclasses.dataclass(frozen=True)
class Settings:
    """An experiment, read once from its config."""

    seed: int
    distributed: bool
    sde: AbstractLinearSDE
    model: ModelSettings
    dequantizer: DequantizerSettings
    training: TrainingSettings
    optim: OptimSettings
    data: DataSettings
    sampling: SamplingSettings
    eval: EvalSettings
    config_json: str  # the config as given, for the workdir's config.json
    interop: InteropSettings = InteropSettings(None, "auto", True)

    def fixed_for_workdir(self) -> dict:
        """The values (`FIXED_FOR_WORKDIR`) a workdir's checkpoints depend on."""
        return fixed_values(json.loads(self.config_json))


def fixed_values(config: Mapping) -> dict:
    """`FIXED_FOR_WORKDIR` read from a config's JSON form (dotted key -> value)."""
    out = {}
    for key in FIXED_FOR_WORKDIR:
        node = config
        for part in key.split("."):
            node = node.get(part) if isinstance(node, Mapping) else None
        out[key] = node
    return out


# --- building each section --------------------------------------------------------------------


def _sde(r: _Reader) -> AbstractLinearSDE:
    name = r.choice("training.sde", SDES)
    # read (so checked) whatever the SDE; only "vpsde_discrete" uses it
    schedule = r.choice("model.beta_schedule", BETA_SCHEDULES, "linear")
    try:
        if name == "vpsde_cosine":
            return CosineVPSDE()
        if name == "vpsde_discrete":
            num_scales = r.integer("model.num_scales")
            if schedule == "cosine":
                return DiscreteVPSDE(betas=discrete_betas("cosine", num_scales))
            betas = discrete_betas(
                "linear",
                num_scales,
                beta_min=r.number("model.beta_min", 0.1, low=0, open_low=True),
                beta_max=r.number("model.beta_max", 20.0, low=0, open_low=True),
            )
            return DiscreteVPSDE(betas=betas)
        if name == "vesde":
            return VESDE(
                sigma_min=r.number("model.sigma_min", low=0, open_low=True),
                sigma_max=r.number("model.sigma_max", low=0, open_low=True),
            )
        cls = VPSDE if name == "vpsde" else SubVPSDE
        return cls(
            beta_min=r.number("model.beta_min", low=0, open_low=True),
            beta_max=r.number("model.beta_max", low=0, open_low=True),
        )
    except ValueError as error:
        raise ConfigError(f"config.model: {error}") from None


def _model(r: _Reader, data: DataSettings, sde: AbstractLinearSDE) -> ModelSettings:
    all_models = {**models.MODELS, **models.CLASSIFIERS, **models.REVERSE_CHAINS}
    name = r.choice("model.name", all_models)
    options = {k: v for k, v in r.config.model.items() if k not in NON_NETWORK_KEYS}
    options = {k: tuple(v) if isinstance(v, list) else v for k, v in options.items()}
    if name in ("ncsnpp", "ddpmpp"):
        options.setdefault("centered", data.centered)
    try:
        network = models.get_model(name, **options)
    except (ValueError, TypeError) as error:
        raise ConfigError(f"config.model: {error}") from None
    num_scales = r.get("model.num_scales", None)
    settings = ModelSettings(
        name=name,
        options=_freeze(options),
        output=r.choice("model.output", ("noise", "score", "x0"), "noise"),
        time_input=_time_input(r, sde),
        time_scale=r.number("model.time_scale", 999.0, low=0, open_low=True),
        ema_rate=r.number("model.ema_rate", 0.9999, low=0, high=1, open_high=True),
        ema_warmup=r.flag("model.ema_warmup"),
        num_scales=None if num_scales is None else r.integer("model.num_scales"),
    )
    _check_network_fits_data(r, name, network, data)
    return settings


def _time_input(r: _Reader, sde: AbstractLinearSDE) -> str:
    time_input = r.choice("model.time_input", TIME_INPUTS, "t")
    try:
        return check_time_input(time_input, sde)
    except ValueError:
        raise ConfigError(
            f"config.model.time_input={time_input!r} (the step index of a table of "
            f"model.num_scales steps) needs training.sde='vpsde_discrete'; got "
            f"training.sde={r.get('training.sde')!r}"
        ) from None


def _check_network_fits_data(r: _Reader, name: str, network, data: DataSettings) -> None:
    info = data.info
    vector_models = ("mlp", "dpm2015_mlp")
    if len(info.shape) == 1 and name not in vector_models:
        raise ConfigError(
            f"config.model.name={name!r} is an image network; data set {info.name!r} "
            "holds vectors: use model.name='mlp' (or 'dpm2015_mlp' for a 2015 chain)"
        )
    if name in models.REVERSE_CHAINS and network.dim != math.prod(info.shape):
        raise ConfigError(
            f"config.model.dim={network.dim}, but data set {info.name!r} has examples of shape "
            f"{info.shape} ({math.prod(info.shape)} values)"
        )
    # Class conditioning, label dropout and guidance against the data's labels.
    data_classes = info.num_classes
    is_classifier = models.is_classifier(network)
    classes = int(getattr(network, "num_classes", 0))
    if (classes or is_classifier) and classes != data_classes:
        what = f"has {data_classes} classes" if data_classes else "has no class labels"
        raise ConfigError(f"config.model.num_classes={classes}, but data set {info.name!r} {what}")


def _data(r: _Reader) -> DataSettings:
    name = r.choice("data.dataset", data_lib.DATASETS)
    data_dir = r.string("data.data_dir")
    image_size = r.get("data.image_size", None)
    channels = r.get("data.num_channels", None)
    if image_size is not None:
        image_size = r.integer("data.image_size")
    if channels is not None:
        channels = r.integer("data.num_channels")
    settings = dict(
        dataset=name,
        data_dir=data_dir,
        image_size=image_size,
        num_channels=channels,
        random_flip=r.flag("data.random_flip"),
        uniform_dequantization=r.flag("data.uniform_dequantization"),
        centered=r.flag("data.centered", True),
    )
    try:
        info = data_lib.describe(
            name,
            data_dir=data_dir,
            image_size=settings["image_size"],
            centered=settings["centered"],
        )
    except data_lib.DataNotPreparedError as error:
        raise ConfigError(str(error)) from None
    if len(info.shape) == 3:
        real_size, real_channels = info.shape[0], info.shape[-1]
        if image_size is not None and image_size != real_size:
            raise ConfigError(
                f"config.data.image_size={image_size}, but data set {name!r} has "
                f"{real_size}x{real_size} images (it cannot be resized)"
            )
        if channels is not None and channels != real_channels:
            raise ConfigError(
                f"config.data.num_channels={channels}, but data set {name!r} has "
                f"{real_channels} channel(s)"
            )
    return DataSettings(**settings, info=info)


def _dequantizer(
    r: _Reader, model: ModelSettings, data: DataSettings, training: TrainingSettings
) -> DequantizerSettings:
    name = r.choice("dequantizer.name", DEQUANTIZERS, "none")
    settings = DequantizerSettings(
        name=name,
        features=r.integer("dequantizer.features", 64),
        num_couplings=r.integer("dequantizer.num_couplings", 4),
    )
    if name == "none":
        return settings
    flow = f"config.dequantizer.name={name!r}"
    if model.name not in models.MODELS:
        raise ConfigError(
            f"{flow} trains with a score network; model.name={model.name!r} is not one"
        )
    if data.info.n_levels is None:
        raise ConfigError(
            f"{flow} dequantizes discrete data; data set {data.info.name!r} is continuous "
            "(use dequantizer.name='none')"
        )
    if data.uniform_dequantization:
        raise ConfigError(
            f"{flow} dequantizes the data itself: set data.uniform_dequantization=False"
        )
    if training.loss.weighting is not WEIGHTINGS["likelihood"]:
        raise ConfigError(
            f"{flow} trains on the likelihood bound: set training.likelihood_weighting=True"
        )
    return settings


def _optim(r: _Reader) -> OptimSettings:
    name = r.choice("optim.optimizer", OPTIMIZERS)
    weight_decay = r.number("optim.weight_decay", 0.0, low=0)
    if name == "adam" and weight_decay:
        raise ConfigError(f"config.optim.weight_decay={weight_decay} needs optim.optimizer='AdamW'")
    grad_clip = r.get("optim.grad_clip", None)
    if grad_clip is not None:
        grad_clip = r.number("optim.grad_clip")
    return OptimSettings(
        optimizer=name,
        lr=r.number("optim.lr", low=0, open_low=True),
        warmup=r.integer("optim.warmup", 0, low=0),
        grad_clip=None if grad_clip is None or grad_clip <= 0 else grad_clip,
        beta1=r.number("optim.beta1", 0.9, low=0, high=1, open_high=True),
        eps=r.number("optim.eps", 1e-8, low=0, open_low=True),
        weight_decay=weight_decay if name == "adamw" else None,
    )


def _loss(r: _Reader, eps: float) -> LossSettings:
    likelihood = r.flag("training.likelihood_weighting")
    importance = r.flag("training.importance_sampling")
    weighting = WEIGHTINGS["likelihood" if likelihood else "sigma2"]
    if r.flag("training.continuous", True):
        sampler = ImportanceTime(eps=eps) if importance else UniformTime(eps=eps)
    else:
        if likelihood or importance:
            raise ConfigError(
                "config.training.likelihood_weighting / importance_sampling need "
                "training.continuous=True"
            )
        sampler = DiscreteTime(num_scales=r.integer("model.num_scales"))
    return LossSettings(weighting, sampler, r.flag("training.reduce_mean"))


def _training(r: _Reader, num_devices: int) -> TrainingSettings:
    batch = r.integer("training.batch_size")
    if batch % num_devices:
        raise ConfigError(
            f"config.training.batch_size={batch} must be divisible by the number of devices "
            f"({num_devices})"
        )
    eps = r.number("training.eps", 1e-5, low=0, high=1, open_low=True, open_high=True)
    return TrainingSettings(
        batch_size=batch,
        n_iters=r.integer("training.n_iters"),
        log_freq=r.integer("training.log_freq"),
        snapshot_freq=r.integer("training.snapshot_freq"),
        snapshot_freq_for_preemption=r.integer("training.snapshot_freq_for_preemption"),
        max_to_keep=r.integer("training.max_to_keep"),
        snapshot_sampling=r.flag("training.snapshot_sampling", True),
        snapshot_samples=r.integer("training.snapshot_samples", 64),
        eps=eps,
        label_dropout=r.number("training.label_dropout", 0.0, low=0, high=1, open_high=True),
        loss=_loss(r, eps),
        # absent from the config.json of runs from before it existed: float32
        compute_dtype=r.choice("training.compute_dtype", COMPUTE_DTYPES, "float32"),
    )


def _pc_sampler(r: _Reader, predictor: str, corrector: str, num_steps: int) -> AbstractSampler:
    snr = r.number("sampling.snr", 0.16, low=0, open_low=True)
    n_corrector_steps = r.integer("sampling.n_steps_each", 1)
    eps, denoise = _sampling_eps(r), r.flag("sampling.noise_removal", True)
    try:
        return PCSampler(
            predictor, corrector, num_steps, eps, denoise, snr=snr,
            n_corrector_steps=n_corrector_steps,
        )  # fmt: skip
    except ValueError as error:
        raise ConfigError(f"config.sampling: {error}") from None


def _sampling_eps(r: _Reader) -> float:
    return r.number("sampling.eps", 1e-3, low=0, high=1, open_low=True, open_high=True)


def _sampler(r: _Reader) -> AbstractSampler:
    method = r.choice("sampling.method", SAMPLING_METHODS)
    steps = r.get("sampling.num_steps", 0) or None
    if steps is not None:
        steps = r.integer("sampling.num_steps")
    eps, denoise = _sampling_eps(r), r.flag("sampling.noise_removal", True)

    def default_steps() -> int:
        if steps:
            return steps
        if r.get("model.num_scales", None) is None:
            raise ConfigError(f"config.sampling.method={method!r} needs sampling.num_steps > 0")
        return r.integer("model.num_scales")

    if method == "pc":
        return _pc_sampler(
            r,
            r.get("sampling.predictor", "euler_maruyama"),
            r.get("sampling.corrector", "none"),
            default_steps(),
        )
    try:
        if method == "ode":
            rtol = r.number("sampling.rtol", 1e-5, low=0, open_low=True)
            atol = r.number("sampling.atol", 1e-5, low=0, open_low=True)
            solver = r.get("sampling.ode_solver", "tsit5")
            return ODESampler(solver, rtol, atol, eps=eps, denoise=denoise)
        if method == "sde":
            solver = r.get("sampling.sde_solver", "euler")
            return SDESampler(solver, default_steps(), eps=eps, denoise=denoise)
        options = r.get("sampling.fast_options", None)
        options = dict(options.to_dict() if hasattr(options, "to_dict") else options or {})
        solver = get_fast_solver(r.get("sampling.fast_solver", "dpm_solver_3m"), **options)
        grid = r.get("sampling.grid", "logsnr")
        if isinstance(grid, str) and grid.endswith(".npy"):
            grid, steps = _grid_file(grid, steps)
        return FastSampler(solver, steps or FAST_DEFAULT_STEPS, grid, eps=eps, denoise=denoise)
    except ConfigError:
        raise
    except (ValueError, TypeError) as error:
        raise ConfigError(f"config.sampling: {error}") from None


def _grid_file(path: str, steps: int | None) -> tuple[np.ndarray, int]:
    """The times of a grid saved by `sde_gen.save_grid` (e.g. fitted by `optimize_grid`),
    and its step count, which `sampling.num_steps` (0 for the file's) must not contradict."""
    if not os.path.isfile(path):
        raise ConfigError(
            f"config.sampling.grid={path!r}: no such file (a .npy grid written by "
            "sde_gen.save_grid, or a grid name: logsnr, uniform, karras, quadratic)"
        )
    try:
        times, _ = load_grid(path)
    except (OSError, ValueError) as error:
        raise ConfigError(f"config.sampling.grid={path!r} cannot be read: {error}") from None
    times = np.asarray(times, np.float64)
    if times.ndim != 1 or len(times) < 2:
        raise ConfigError(f"config.sampling.grid={path!r} holds {times.shape}, not a 1-D grid")
    if steps is not None and steps != len(times) - 1:
        raise ConfigError(
            f"config.sampling.num_steps={steps}, but the grid {path!r} has {len(times) - 1} "
            "steps (set num_steps=0 to take the file's)"
        )
    return times, len(times) - 1


def _guidance(r: _Reader, network, data: DataSettings) -> GuidanceSettings:
    guidance = GuidanceSettings(
        cfg_weight=r.number("sampling.cfg_weight", 0.0, low=0),
        classifier_scale=r.number("sampling.classifier_scale", 0.0, low=0),
        classifier_workdir=r.string("sampling.classifier_workdir"),
    )
    null_class = bool(getattr(network, "null_class", False)) and not models.is_classifier(network)
    dropout = r.number("training.label_dropout", 0.0, low=0, high=1, open_high=True)
    if dropout and not null_class:
        raise ConfigError(
            f"config.training.label_dropout={dropout} must lie in [0, 1), and > 0 needs a "
            "class-conditional network with model.null_class=True"
        )
    if guidance.cfg_weight and not null_class:
        raise ConfigError(
            f"config.sampling.cfg_weight={guidance.cfg_weight} (classifier-free guidance) "
            "needs a class-conditional network trained with a null class: model.null_class=True "
            "and training.label_dropout > 0"
        )
    if guidance.classifier_scale and not models.is_classifier(network):
        workdir = guidance.classifier_workdir
        if not data.info.num_classes:
            raise ConfigError(f"classifier guidance needs class labels; {data.dataset!r} has none")
        if not workdir or not os.path.exists(os.path.join(workdir, "config.json")):
            raise ConfigError(
                f"config.sampling.classifier_scale={guidance.classifier_scale} needs "
                f"config.sampling.classifier_workdir, the workdir of a trained classifier "
                f"(configs/classifier_*.py); got {workdir!r}, which holds no config.json"
            )
    return guidance


def _task(r: _Reader, data: DataSettings) -> TaskSettings | None:
    task = r.choice("sampling.task", TASKS, "generate")
    if task == "generate":
        return None
    pc = r.get("sampling.method") == "pc"
    steps = (r.get("sampling.num_steps", 0) if pc else 0) or r.get("model.num_scales", None)
    if not steps:
        raise ConfigError("config.sampling.task needs sampling.num_steps or model.num_scales")
    method = r.choice("sampling.impute_method", IMPUTE_METHODS, "replacement")
    corrector = r.get("sampling.corrector", "langevin") if pc else "langevin"
    if method == "smc":
        if pc and str(corrector).lower() != "none":
            raise ConfigError(
                f"config.sampling.impute_method='smc' takes no corrector (its weights are the "
                f"predictor's transition density); set config.sampling.corrector='none', got "
                f"{corrector!r}"
            )
        corrector = "none"
    sampler = _pc_sampler(
        r,
        r.get("sampling.predictor", "reverse_diffusion") if pc else "reverse_diffusion",
        corrector,
        int(steps),
    )
    if method == "smc" and not isinstance(sampler.predictor, AbstractGaussianPredictor):
        raise ConfigError(
            "config.sampling.impute_method='smc' needs a predictor with a Gaussian step "
            f"(euler_maruyama, reverse_diffusion or ancestral); got {sampler.predictor!r}"
        )
    particles = r.integer("sampling.num_particles", DEFAULT_PARTICLES)
    weight = r.number("sampling.guidance_weight", DEFAULT_GUIDANCE_WEIGHT, low=0)
    mask = r.choice("sampling.inpaint_mask", INPAINT_MASKS) if task == "inpaint" else None
    if len(data.info.shape) != 3:
        raise ConfigError(f"config.sampling.task={task!r} needs images; {data.dataset!r} has none")
    if task == "colorize" and data.info.shape[-1] != 3:
        raise ConfigError(
            f"config.sampling.task='colorize' needs color images (data.num_channels=3); "
            f"data set {data.dataset!r} has {data.info.shape[-1]} channel(s)"
        )
    return TaskSettings(
        task=task,
        sampler=sampler,
        mask=mask,
        examples=r.integer("sampling.task_examples", 64),
        split=r.choice("sampling.task_split", data_lib.SPLITS, "test"),
        impute_method=method,
        num_particles=particles if method == "smc" else None,
        guidance_weight=weight if method == "reconstruction_guidance" else None,
    )


def _features(r: _Reader, info: data_lib.DataInfo) -> str:
    kind = r.choice("eval.features", FEATURES, "auto")
    if kind != "auto":
        return kind
    if len(info.shape) == 1:
        return "data"
    return "inception" if info.shape[-1] == 3 and info.shape[0] >= 32 else "classifier"


def _eval(r: _Reader, data: DataSettings, num_devices: int) -> EvalSettings:
    batch = r.integer("eval.batch_size", 1024)
    if batch % num_devices:
        raise ConfigError(
            f"config.eval.batch_size={batch} must be divisible by the number of devices "
            f"({num_devices})"
        )
    checkpoint = r.get("eval.checkpoint", "latest")
    if isinstance(checkpoint, str) and checkpoint.isdigit():
        checkpoint = int(checkpoint)
    if not (checkpoint in ("latest", "all") or (isinstance(checkpoint, int) and checkpoint >= 0)):
        raise ConfigError(
            f"config.eval.checkpoint must be 'latest', 'all' or a step number; got {checkpoint!r}"
        )
    features = _features(r, data.info)
    enable_sampling = r.flag("eval.enable_sampling", True)
    weights = r.string("eval.inception_weights")
    stats = r.string("eval.reference_stats") or None
    if stats is not None and features != "inception":
        raise ConfigError(
            f"config.eval.reference_stats={stats!r} holds Inception pool3 statistics, but "
            f"config.eval.features resolves to {features!r}: set eval.features='inception' "
            "or drop eval.reference_stats"
        )
    limit = r.integer("eval.bpd_num_examples", 0, low=0) or None
    return EvalSettings(
        checkpoint=checkpoint,
        batch_size=batch,
        num_samples=r.integer("eval.num_samples", 50_000),
        enable_sampling=enable_sampling,
        features=features,
        inception_weights=weights,
        classifier_steps=r.integer("eval.classifier_steps", 1500),
        reference_split=r.choice("eval.reference_split", data_lib.SPLITS, "test"),
        reference_examples=r.integer("eval.reference_examples", 10_000),
        reference_stats=stats,
        enable_bpd=r.flag("eval.enable_bpd"),
        bpd_dataset=r.choice("eval.bpd_dataset", data_lib.SPLITS, "test"),
        bpd_num_examples=limit,
        bpd_batch_size=r.integer("eval.bpd_batch_size", 256),
        bpd_repeats=r.integer("eval.bpd_repeats", 1),
        divergence=r.choice("eval.divergence", DIVERGENCES, "hutchinson"),
        enable_bound=r.flag("eval.enable_bound"),
        bound_samples=r.integer("eval.bound_samples", 16),
        bpd_rtol=r.number("eval.bpd_rtol", 1e-5, low=0, open_low=True),
        bpd_atol=r.number("eval.bpd_atol", 1e-5, low=0, open_low=True),
    )


def load(config: ml_collections.ConfigDict, num_devices: int | None = None) -> Settings:
    """Read and check the whole config once; `ConfigError` names the first bad value.

    `num_devices` (default: all devices) is what batch sizes must divide into.
    """
    if isinstance(config, Settings):
        return config
    import jax

    for section in SECTIONS:
        if section not in config:
            raise ConfigError(f"config has no '{section}' section")
    devices = jax.device_count() if num_devices is None else num_devices
    r = _Reader(config)
    seed = r.integer("seed", 0, low=0)
    data = _data(r)
    sde = _sde(r)
    model = _model(r, data, sde)
    network = model.network()
    training = _training(r, devices)
    dequantizer = _dequantizer(r, model, data, training)
    if training.compute_dtype != "float32" and model.name in models.REVERSE_CHAINS:
        raise ConfigError(
            f"config.training.compute_dtype={training.compute_dtype!r} is for score and "
            f"classifier networks; model.name={model.name!r} (a 2015 chain) trains in float32"
        )
    optim = _optim(r)
    sampling = SamplingSettings(
        sampler=_sampler(r), guidance=_guidance(r, network, data), task=_task(r, data)
    )
    evaluation = _eval(r, data, devices)
    return Settings(
        seed=seed,
        distributed=r.flag("distributed"),
        sde=sde,
        model=model,
        dequantizer=dequantizer,
        training=training,
        optim=optim,
        data=data,
        sampling=sampling,
        eval=evaluation,
        config_json=config.to_json_best_effort(indent=2),
        interop=InteropSettings(
            checkpoint=r.string("interop.checkpoint"),
            format=r.choice("interop.format", IMPORT_FORMATS, "auto"),
            use_ema=r.flag("interop.use_ema", True),
        ),
    )


# --- config files --------------------------------------------------------------------------------


def shipped_configs() -> dict[str, str]:
    """The experiment files installed with the package (the top-level `configs` package:
    a checkout's `configs/` or the wheel's copy), `{name: path}`, sorted by name; only
    files that define `get_config` (not `default_cifar`, the shared base)."""
    spec = importlib.util.find_spec("configs")
    if spec is None or not spec.submodule_search_locations:
        return {}
    found = {}
    for directory in spec.submodule_search_locations:
        for file in sorted(os.listdir(directory)):
            path = os.path.join(directory, file)
            if file.endswith(".py") and not file.startswith("_") and os.path.isfile(path):
                with open(path) as f:
                    if "\ndef get_config(" in f.read():
                        found.setdefault(file[:-3], path)
    return dict(sorted(found.items()))


def config_file(name: str) -> str:
    """The file `--config` names: an existing file as given; else a shipped config, named
    bare (`vp_digits`, `vp_digits.py`) or as the docs cite it (`configs/vp_digits.py`, so
    their commands also run outside a checkout); `ConfigError` listing the shipped configs
    otherwise."""
    if os.path.isfile(name):
        return name
    head, file = os.path.split(name)
    stem = file[:-3] if file.endswith(".py") else file
    shipped = shipped_configs()
    may_be_shipped = not head or os.path.basename(os.path.normpath(head)) == "configs"
    if may_be_shipped and stem in shipped:
        return shipped[stem]
    close = difflib.get_close_matches(stem, list(shipped), n=1) if may_be_shipped else []
    hint = f"did you mean {close[0]}? " if close else ""
    choices = ", ".join(shipped) or "none found"
    if head or file.endswith((".py", ".json")):
        problem = f"config file {name!r} does not exist"
    else:
        problem = f"unknown config {name!r}"
    raise ConfigError(f"{problem}; {hint}shipped configs: {choices}")


def load_file(path: str, overrides: Mapping[str, Any] | None = None) -> ml_collections.ConfigDict:
    """The `get_config()` of a config file (`configs/*.py`, or a shipped config by name,
    see `config_file`), or the ConfigDict saved as a workdir's `config.json`, with
    dotted-key `overrides`; `ConfigError` for a missing or unloadable file or an unknown key
    (with the closest valid key)."""
    path = config_file(path)
    try:
        if path.endswith(".json"):
            with open(path) as f:
                config = ml_collections.ConfigDict(json.load(f))
        else:
            spec = importlib.util.spec_from_file_location("_sde_gen_config", path)
            module = importlib.util.module_from_spec(spec)
            spec.loader.exec_module(module)
            config = module.get_config()
    except Exception as error:  # any failure of the user's file: name it, in one line
        raise ConfigError(
            f"config file {path!r} could not be loaded: {type(error).__name__}: {error}"
        ) from None
    for key, text in (overrides or {}).items():
        set_value(config, key, parse_override(config, key, text) if isinstance(text, str) else text)
    return config


def parse_override(config: ml_collections.ConfigDict, key: str, text: str) -> Any:
    """The value of a command-line override `--config.<key>=<text>`, read as the type the
    config already holds there (a string stays a string; numbers, booleans, tuples and
    lists are parsed)."""
    import ast

    current = _lookup(config, key)
    if isinstance(current, str):
        return text
    if isinstance(current, bool):
        if text.lower() in ("true", "1", "yes"):
            return True
        if text.lower() in ("false", "0", "no"):
            return False
        raise ConfigError(f"--config.{key}={text!r}: expected True or False")
    try:
        value = ast.literal_eval(text)
    except (ValueError, SyntaxError):
        if isinstance(current, (int, float, tuple, list)) and not isinstance(current, bool):
            kind = {"int": "an integer", "float": "a number"}.get(type(current).__name__)
            kind = kind or f"a {type(current).__name__}"
            raise ConfigError(f"--config.{key}={text!r}: expected {kind}") from None
        return text
    if isinstance(current, float) and isinstance(value, int) and not isinstance(value, bool):
        value = float(value)
    return value


def _lookup(config, key: str) -> Any:
    node = config
    for part in key.split("."):
        if not hasattr(node, "keys") or part not in node:
            set_value(config, key, None)  # raises the error naming the closest key
        node = node[part]
    return node


def set_value(config: ml_collections.ConfigDict, key: str, value: Any) -> None:
    """`config.<key> = value` for a dotted key that exists; `ConfigError` naming the closest
    existing key otherwise."""
    node, parts = config, key.split(".")
    for i, part in enumerate(parts):
        if not hasattr(node, "keys") or part not in node:
            where = ".".join(parts[:i])
            candidates = list(node.keys()) if hasattr(node, "keys") else []
            close = difflib.get_close_matches(part, candidates, n=1)
            hint = f"; did you mean config.{'.'.join([*parts[:i], close[0]])}?" if close else ""
            raise ConfigError(
                f"config.{key}: no key {part!r} in config{'.' + where if where else ''}{hint}"
            )
        if i < len(parts) - 1:
            node = node[part]
    try:
        node[parts[-1]] = value
    except (TypeError, ValueError) as error:
        raise ConfigError(f"config.{key}={value!r}: {error}") from None


def check_same_experiment(settings: Settings, workdir: str, *, has_checkpoints: bool) -> None:
    """Refuse a workdir whose checkpoints were trained with another model, SDE or data set
    (resuming would fail half-way; evaluating would draw from the wrong process)."""
    path = os.path.join(workdir, "config.json")
    if not (has_checkpoints and os.path.exists(path)):
        return
    try:
        with open(path) as f:
            saved = fixed_values(json.load(f))
    except (OSError, ValueError) as error:
        raise ConfigError(f"{path} cannot be read ({error}); it names the run's settings") from None
    for key, new in settings.fixed_for_workdir().items():
        if saved[key] is None and key == "dequantizer" and new.get("name") == "none":
            continue  # a run from before learned dequantizers existed had none
        if saved[key] != new:
            raise ConfigError(
                f"{workdir} holds checkpoints of a run with config.{key} = {saved[key]!r}; this "
                f"config has {new!r}. Use another --workdir, or the run's own config."
            )
