"""From an experiment config (`ml_collections.ConfigDict`, see `configs/`) to the objects it
names: the SDE, the score network and its score function, the optimizer, the loss pieces,
the data pipeline and the sampler.

The runners (`sde_gen.train`, `launch.py`) call `check_config` first: it builds every
object once, so an unknown name, an inconsistent value or a batch that does not split over
the devices fails with a message naming the config key, before any data is read or any
step is compiled.

The config layout follows score_sde (`training`, `sampling`, `data`, `model`, `optim`,
`seed`), with two additions to `model`: `output` ("noise", "score" or "x0": what the
network predicts) and `time_input` ("t": the network sees `time_scale * t`; "std": it sees
the noise standard deviation, as NCSN++ with Fourier features does). Every other key of
`config.model` besides the SDE constants and `ema_rate` is an option of the network.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import optax

from . import data as data_lib
from . import models
from ._checks import choose
from .guidance import classifier_free_guidance, classifier_guidance
from .losses import (
    WEIGHTINGS,
    AbstractTimeSampler,
    DiscreteTime,
    ImportanceTime,
    UniformTime,
    Weighting,
)
from .sampling import (
    FastSampler,
    ODESampler,
    PCSampler,
    SDESampler,
    get_corrector,
    get_fast_solver,
    get_predictor,
)
from .score import ModelClassifier, ModelScore, ScoreFn
from .sde import VESDE, VPSDE, AbstractLinearSDE, SubVPSDE

SDES = ("vpsde", "subvpsde", "vesde")
OPTIMIZERS = ("adam", "adamw")
SAMPLING_METHODS = ("pc", "ode", "sde", "fast")
FAST_DEFAULT_STEPS = 20
TASKS = ("generate", "inpaint", "colorize")  # what --mode=sample does
INPAINT_MASKS = ("left_half", "right_half", "top_half", "bottom_half", "center", "random")
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
        "output",
        "time_input",
        "time_scale",
    }
)


class ConfigError(ValueError):
    """A config value that cannot work, named by its key."""


def _get(config: ml_collections.ConfigDict, path: str, default=None):
    node = config
    for part in path.split("."):
        if node is None or part not in node:
            return default
        node = node[part]
    return node


def _positive_int(config, path: str) -> int:
    value = _get(config, path)
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ConfigError(f"config.{path} must be a positive integer; got {value!r}")
    return value


def _choose(config, path: str, choices) -> str:
    value = _get(config, path)
    try:
        choose(f"config.{path}", value, dict.fromkeys(choices))
    except ValueError as error:
        raise ConfigError(str(error)) from None
    return value.lower()


def get_sde(config) -> AbstractLinearSDE:
    """`config.training.sde` with the constants in `config.model`."""
    name = _choose(config, "training.sde", SDES)
    model = config.model
    if name == "vesde":
        return VESDE(sigma_min=float(model.sigma_min), sigma_max=float(model.sigma_max))
    cls = VPSDE if name == "vpsde" else SubVPSDE
    return cls(beta_min=float(model.beta_min), beta_max=float(model.beta_max))


def network_options(config) -> dict:
    """The network's keyword arguments: `config.model` less the non-network keys, plus
    `centered` from `config.data` for the image networks."""
    options = {k: v for k, v in config.model.items() if k not in NON_NETWORK_KEYS}
    options = {k: tuple(v) if isinstance(v, list) else v for k, v in options.items()}
    if config.model.name in ("ncsnpp", "ddpmpp"):
        options.setdefault("centered", bool(config.data.centered))
    return options


def is_classifier(config) -> bool:
    """Whether the config trains a noise-conditional classifier (`models.CLASSIFIERS`)
    rather than a score network."""
    return str(config.model.name).lower() in models.CLASSIFIERS


def is_dpm2015(config) -> bool:
    """Whether the config trains a 2015 discrete chain (`models.REVERSE_CHAINS`)."""
    return str(config.model.name).lower() in models.REVERSE_CHAINS


def get_model(config) -> nn.Module:
    """The network `config.model.name` with its options."""
    _choose(config, "model.name", {**models.MODELS, **models.CLASSIFIERS, **models.REVERSE_CHAINS})
    try:
        return models.get_model(config.model.name, **network_options(config))
    except (ValueError, TypeError) as error:
        raise ConfigError(f"config.model: {error}") from None


def get_score_fn(
    config,
    model: nn.Module,
    variables,
    sde: AbstractLinearSDE,
    labels=None,
    guided: bool = False,
    classifier: ModelClassifier | None = None,
    **kw,
) -> ScoreFn:
    """The score function of `model` with `variables`, read as `config.model.output`.

    A class-conditional network needs `labels` (one class per example): the score of
    `p_t(x | y)`. With `guided=True` the sampling guidance of `config.sampling` is applied:
    classifier-free guidance with weight `cfg_weight` (the network's null class is the
    unconditional model), and classifier guidance with `classifier_scale` and `classifier`
    (a `ModelClassifier`, see `evaluate.load_classifier`), both for `labels`.
    """
    make = lambda y: ModelScore(
        model,
        variables,
        sde,
        output=config.model.get("output", "noise"),
        time_input=config.model.get("time_input", "t"),
        time_scale=float(config.model.get("time_scale", 999.0)),
        labels=y,
        **kw,
    )
    classes = models.num_classes(model)
    if not classes:
        score_fn = make(None)
    elif labels is None:
        raise ValueError(f"the network is class-conditional ({classes} classes): pass labels")
    else:
        score_fn = make(labels)
    if not guided:
        return score_fn
    guidance = guidance_settings(config)
    if guidance["cfg_weight"]:
        null = jnp.full_like(jnp.asarray(labels), classes)
        score_fn = classifier_free_guidance(score_fn, make(null), guidance["cfg_weight"])
    if guidance["classifier_scale"]:
        if classifier is None or labels is None:
            raise ValueError("classifier guidance needs the classifier and the labels")
        score_fn = classifier_guidance(
            score_fn, dataclasses.replace(classifier, labels=labels), guidance["classifier_scale"]
        )
    return score_fn


def get_classifier_fn(
    config, model: nn.Module, variables, sde: AbstractLinearSDE
) -> ModelClassifier:
    """The noise-conditional classifier `model` with `variables` of a classifier config, seeing
    the time labels its config names (as `get_score_fn` does for score networks)."""
    return ModelClassifier(
        model,
        variables,
        sde,
        time_input=config.model.get("time_input", "t"),
        time_scale=float(config.model.get("time_scale", 999.0)),
    )


def guidance_settings(config) -> dict:
    """`config.sampling`'s guidance: `cfg_weight` (classifier-free), `classifier_scale` and
    `classifier_workdir` (the run of a noise-conditional classifier)."""
    s = config.sampling
    return {
        "cfg_weight": float(s.get("cfg_weight", 0.0) or 0.0),
        "classifier_scale": float(s.get("classifier_scale", 0.0) or 0.0),
        "classifier_workdir": s.get("classifier_workdir", None),
    }


def sample_classes(config) -> int:
    """How many classes samples are drawn for: the network's classes, or the data's when a
    classifier guides an unconditional network; 0 for plain unconditional sampling."""
    classes = int(config.model.get("num_classes", 0) or 0)
    if not classes and guidance_settings(config)["classifier_scale"]:
        classes = data_lib.num_classes(config.data.dataset)
    return classes


def get_optimizer(config) -> optax.GradientTransformation:
    """score_sde's optimizer from `config.optim` (Adam, or AdamW with `weight_decay`)."""
    optim = config.optim
    name = _choose(config, "optim.optimizer", OPTIMIZERS)
    if name == "adam" and optim.get("weight_decay", 0.0):
        raise ConfigError(
            f"config.optim.weight_decay={optim.weight_decay} needs optim.optimizer='AdamW'"
        )
    grad_clip = optim.get("grad_clip", None)
    from .train import make_optimizer  # train imports this module

    try:
        return make_optimizer(
            lr=float(optim.lr),
            warmup=int(optim.warmup),
            grad_clip=None if grad_clip is None or grad_clip <= 0 else float(grad_clip),
            beta1=float(optim.beta1),
            eps=float(optim.eps),
            weight_decay=float(optim.get("weight_decay", 0.0)) if name == "adamw" else None,
        )
    except ValueError as error:
        raise ConfigError(f"config.optim: {error}") from None


@dataclasses.dataclass(frozen=True)
class LossSpec:
    """The objective: weighting, time sampler and reduction."""

    weighting: Weighting
    time_sampler: AbstractTimeSampler
    reduce_mean: bool


def get_loss(config) -> LossSpec:
    """Continuous (sigma^2 or likelihood weighting, uniform or importance-sampled t) or
    discrete (DDPM with a VP SDE, SMLD with VE; `model.num_scales` noise levels)."""
    training = config.training
    weighting = WEIGHTINGS["likelihood" if training.likelihood_weighting else "sigma2"]
    eps = float(training.get("eps", 1e-5))
    if not 0.0 < eps < 1.0:
        raise ConfigError(f"config.training.eps must lie in (0, T = 1); got {eps}")
    if training.continuous:
        importance = training.get("importance_sampling", False)
        sampler = ImportanceTime(eps=eps) if importance else UniformTime(eps=eps)
    else:
        if training.likelihood_weighting or training.get("importance_sampling", False):
            raise ConfigError(
                "config.training.likelihood_weighting / importance_sampling need "
                "training.continuous=True"
            )
        sampler = DiscreteTime(num_scales=_positive_int(config, "model.num_scales"))
    return LossSpec(weighting, sampler, bool(training.reduce_mean))


def get_dataset(config, split: str, batch_size: int, **kw):
    """`sde_gen.data.get_dataset` with `config.data`'s settings (training augmentation
    only on the train split)."""
    d = config.data
    name = _choose(config, "data.dataset", data_lib.DATASETS)
    kw.setdefault("seed", int(config.seed))
    return data_lib.get_dataset(
        name,
        split,
        batch_size,
        data_dir=d.get("data_dir", None),
        image_size=d.get("image_size", None) if name in data_lib.IMAGE_DATASETS else None,
        random_flip=bool(d.get("random_flip", False)) and split == "train",
        dequantize=bool(d.get("uniform_dequantization", False)),
        centered=bool(d.get("centered", True)),
        **kw,
    )


Sampler = Callable[[jax.Array, ModelScore, tuple], tuple]


def sampler_settings(config) -> dict:
    """The settings of `config.sampling`'s method with the defaults filled in: what
    `get_sampler` builds and what the eval report records.

    "pc": predictor, corrector, snr, n_steps_each, num_steps (default `model.num_scales`);
    "ode": adaptive `ode_solver` with rtol/atol; "sde": reverse SDE with `sde_solver` and
    num_steps; "fast": `fast_solver` (a name of `sg.sample_fast`, default "dpm_solver_3m"),
    `grid` (default "logsnr"), num_steps (default 20) and `fast_options` (solver fields such
    as `eta` for DDIM). All take `eps` (1e-3) and `noise_removal` (final Tweedie step).
    """
    s = config.sampling
    method = _choose(config, "sampling.method", SAMPLING_METHODS)
    out = {
        "method": method,
        "eps": float(s.get("eps", 1e-3)),
        "denoise": bool(s.get("noise_removal", True)),
    }
    steps = s.get("num_steps", None)
    if method == "pc":
        out.update(
            predictor=s.get("predictor", "euler_maruyama"),
            corrector=s.get("corrector", "none"),
            snr=float(s.get("snr", 0.16)),
            n_steps_each=int(s.get("n_steps_each", 1)),
            num_steps=int(steps or config.model.num_scales),
        )
    elif method == "ode":
        out.update(
            solver=s.get("ode_solver", "tsit5"),
            rtol=float(s.get("rtol", 1e-5)),
            atol=float(s.get("atol", 1e-5)),
        )
    elif method == "sde":
        out.update(
            solver=s.get("sde_solver", "euler"), num_steps=int(steps or config.model.num_scales)
        )
    else:
        options = s.get("fast_options", None)
        out.update(
            solver=s.get("fast_solver", "dpm_solver_3m"),
            grid=s.get("grid", "logsnr"),
            num_steps=int(steps or FAST_DEFAULT_STEPS),
            options=dict(options.to_dict() if hasattr(options, "to_dict") else options or {}),
        )
    guidance = guidance_settings(config)
    if guidance["cfg_weight"]:
        out["cfg_weight"] = guidance["cfg_weight"]
    if guidance["classifier_scale"]:
        out["classifier_scale"] = guidance["classifier_scale"]
        out["classifier_workdir"] = guidance["classifier_workdir"]
    return out


def sampler_name(settings: dict) -> str:
    """A short readable name of `sampler_settings`, e.g. "pc-euler_maruyama-none-500" or
    "fast-dpm_solver_3m-logsnr-20" (file names of eval outputs start with it)."""
    method = settings["method"]
    if method == "pc":
        parts = (settings["predictor"], settings["corrector"], settings["num_steps"])
    elif method == "ode":
        parts = (settings["solver"], f"{settings['rtol']:g}")
    elif method == "sde":
        parts = (settings["solver"], settings["num_steps"])
    else:
        parts = (settings["solver"], settings["grid"], settings["num_steps"])
    if settings.get("cfg_weight"):
        parts = (*parts, f"cfg{settings['cfg_weight']:g}")
    if settings.get("classifier_scale"):
        parts = (*parts, f"cg{settings['classifier_scale']:g}")
    return "-".join(str(p).lower() for p in (method, *parts))


def inverse_problem_settings(config) -> dict:
    """The settings of `--mode=sample` inpainting or colorization (`sampling.task`): the
    replacement method runs in the PC sampler, so it takes `sampling.predictor` (default
    "reverse_diffusion" when the config's method is not "pc"), `corrector`, `snr`,
    `n_steps_each`, `num_steps` (default `model.num_scales`), `eps`, `noise_removal`; plus
    `inpaint_mask` and `task_examples` (64)."""
    s = config.sampling
    task = _choose(config, "sampling.task", TASKS)
    pc = s.method == "pc"
    out = {
        "predictor": s.get("predictor", "reverse_diffusion") if pc else "reverse_diffusion",
        "corrector": s.get("corrector", "langevin") if pc else "langevin",
        "snr": float(s.get("snr", 0.16)),
        "n_steps_each": int(s.get("n_steps_each", 1)),
        "num_steps": int((s.get("num_steps", 0) if pc else 0) or config.model.num_scales),
        "eps": float(s.get("eps", 1e-3)),
        "denoise": bool(s.get("noise_removal", True)),
        "examples": int(s.get("task_examples", 64)),
    }
    if task == "inpaint":
        out["mask"] = _choose(config, "sampling.inpaint_mask", INPAINT_MASKS)
    if task == "colorize" and int(config.data.num_channels) != 3:
        raise ConfigError(
            f"config.sampling.task='colorize' needs color images (data.num_channels=3); "
            f"data set {config.data.dataset!r} has data.num_channels={config.data.num_channels}"
        )
    if out["examples"] < 1:
        raise ConfigError(f"config.sampling.task_examples must be >= 1; got {out['examples']}")
    return out


def get_sampler(config, sde: AbstractLinearSDE) -> Sampler:
    """`sample(key, score_fn, shape) -> (x, nfe)` as `config.sampling` says (see
    `sampler_settings`). Bad values raise `ConfigError` here, before any sampling."""
    st = sampler_settings(config)
    eps, denoise = st["eps"], st["denoise"]
    try:
        if st["method"] == "pc":
            predictor = get_predictor(st["predictor"])
            corrector = get_corrector(st["corrector"], st["snr"], st["n_steps_each"])
            sampler = PCSampler(predictor, corrector, st["num_steps"], eps=eps, denoise=denoise)
        elif st["method"] == "ode":
            sampler = ODESampler(
                st["solver"], st["rtol"], st["atol"], eps=eps, denoise=denoise
            )
        elif st["method"] == "sde":
            sampler = SDESampler(st["solver"], st["num_steps"], eps=eps, denoise=denoise)
        else:
            solver = get_fast_solver(st["solver"], **st["options"])
            sampler = FastSampler(
                solver, st["num_steps"], grid=st["grid"], eps=eps, denoise=denoise
            )
        return lambda key, score_fn, shape: sampler(key, sde, score_fn, shape)
    except (ValueError, TypeError) as error:
        raise ConfigError(f"config.sampling: {error}") from None


def _check_classes(config, model: nn.Module) -> None:
    """Class conditioning, label dropout and guidance settings against the data's labels."""
    dataset = _choose(config, "data.dataset", data_lib.DATASETS)
    data_classes = data_lib.num_classes(dataset)
    classes = int(getattr(model, "num_classes", 0))
    if (classes or models.is_classifier(model)) and classes != data_classes:
        what = f"has {data_classes} classes" if data_classes else "has no class labels"
        raise ConfigError(f"config.model.num_classes={classes}, but data set {dataset!r} {what}")
    null_class = bool(getattr(model, "null_class", False)) and not models.is_classifier(model)
    dropout = float(config.training.get("label_dropout", 0.0) or 0.0)
    if not 0.0 <= dropout < 1.0 or (dropout and not null_class):
        raise ConfigError(
            f"config.training.label_dropout={dropout} must lie in [0, 1), and > 0 needs a "
            "class-conditional network with model.null_class=True"
        )
    guidance = guidance_settings(config)
    for key in ("cfg_weight", "classifier_scale"):
        if not guidance[key] >= 0.0:
            raise ConfigError(f"config.sampling.{key} must be >= 0; got {guidance[key]}")
    if guidance["cfg_weight"] and not null_class:
        raise ConfigError(
            f"config.sampling.cfg_weight={guidance['cfg_weight']} (classifier-free guidance) "
            "needs a class-conditional network trained with a null class: model.null_class=True "
            "and training.label_dropout > 0"
        )
    if guidance["classifier_scale"] and not models.is_classifier(model):
        workdir = guidance["classifier_workdir"]
        if not data_classes:
            raise ConfigError(f"classifier guidance needs class labels; {dataset!r} has none")
        if not workdir or not os.path.exists(os.path.join(workdir, "config.json")):
            raise ConfigError(
                f"config.sampling.classifier_scale={guidance['classifier_scale']} needs "
                f"config.sampling.classifier_workdir, the workdir of a trained classifier "
                f"(configs/classifier_*.py); got {workdir!r}, which holds no config.json"
            )


def check_config(config, num_devices: int | None = None) -> None:
    """Build everything the config names once, raising `ConfigError` on the first bad value."""
    for section in ("training", "sampling", "data", "model", "optim"):
        if section not in config:
            raise ConfigError(f"config has no '{section}' section")
    for key in ("training.batch_size", "training.n_iters", "training.log_freq"):
        _positive_int(config, key)
    for key in ("training.snapshot_freq", "training.snapshot_freq_for_preemption"):
        _positive_int(config, key)
    _positive_int(config, "training.max_to_keep")
    devices = jax.device_count() if num_devices is None else num_devices
    if config.training.batch_size % devices:
        raise ConfigError(
            f"config.training.batch_size={config.training.batch_size} must be divisible by the "
            f"number of devices ({devices})"
        )
    if not 0.0 <= config.model.ema_rate < 1.0:
        raise ConfigError(f"config.model.ema_rate must lie in [0, 1); got {config.model.ema_rate}")
    sde = get_sde(config)
    model = get_model(config)
    _check_classes(config, model)
    _choose(config, "model.output", ("noise", "score", "x0"))
    _choose(config, "model.time_input", ("t", "std"))
    get_optimizer(config)
    get_loss(config)
    get_sampler(config, sde)
    if config.sampling.get("task", "generate") != "generate":
        settings = inverse_problem_settings(config)
        try:
            get_predictor(settings["predictor"])
            get_corrector(settings["corrector"], settings["snr"], settings["n_steps_each"])
        except ValueError as error:
            raise ConfigError(f"config.sampling: {error}") from None
    if "eval" in config:
        from .evaluate import FEATURES
        from .likelihood import DIVERGENCES

        _choose(config, "eval.features", FEATURES)
        _choose(config, "eval.divergence", DIVERGENCES)
        for key in ("eval.batch_size", "eval.num_samples", "eval.bpd_repeats"):
            _positive_int(config, key)
        if config.eval.batch_size % devices:
            raise ConfigError(
                f"config.eval.batch_size={config.eval.batch_size} must be divisible by the "
                f"number of devices ({devices})"
            )
    name = _choose(config, "data.dataset", data_lib.DATASETS)
    if name in data_lib.TOY_DATASETS and config.model.name not in ("mlp", "dpm2015_mlp"):
        raise ConfigError(
            f"config.model.name={config.model.name!r} is an image network; data set {name!r} "
            "holds vectors: use model.name='mlp' (or 'dpm2015_mlp' for a 2015 chain)"
        )
