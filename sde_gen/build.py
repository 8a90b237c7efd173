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
from collections.abc import Callable

import flax.linen as nn
import jax
import ml_collections
import optax

from . import data as data_lib
from . import models
from ._checks import choose
from .losses import (
    WEIGHTINGS,
    AbstractTimeSampler,
    DiscreteTime,
    ImportanceTime,
    UniformTime,
    Weighting,
)
from .sampling import (
    GRIDS,
    get_corrector,
    get_fast_solver,
    get_predictor,
    sample_fast,
    sample_ode,
    sample_pc,
    sample_sde,
)
from .score import ModelScore
from .sde import VESDE, VPSDE, AbstractLinearSDE, SubVPSDE

SDES = ("vpsde", "subvpsde", "vesde")
OPTIMIZERS = ("adam", "adamw")
SAMPLING_METHODS = ("pc", "ode", "sde", "fast")
FAST_DEFAULT_STEPS = 20
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


def get_model(config) -> nn.Module:
    """The network `config.model.name` with its options."""
    _choose(config, "model.name", models.MODELS)
    try:
        return models.get_model(config.model.name, **network_options(config))
    except (ValueError, TypeError) as error:
        raise ConfigError(f"config.model: {error}") from None


def get_score_fn(config, model: nn.Module, variables, sde: AbstractLinearSDE, **kw) -> ModelScore:
    """The score function of `model` with `variables`, read as `config.model.output`."""
    return ModelScore(
        model,
        variables,
        sde,
        output=config.model.get("output", "noise"),
        time_input=config.model.get("time_input", "t"),
        time_scale=float(config.model.get("time_scale", 999.0)),
        **kw,
    )


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
    return "-".join(str(p).lower() for p in (method, *parts))


def get_sampler(config, sde: AbstractLinearSDE) -> Sampler:
    """`sample(key, score_fn, shape) -> (x, nfe)` as `config.sampling` says (see
    `sampler_settings`). Bad values raise `ConfigError` here, before any sampling."""
    st = sampler_settings(config)
    eps, denoise = st["eps"], st["denoise"]
    try:
        if st["method"] == "pc":
            predictor = get_predictor(st["predictor"])
            corrector = get_corrector(st["corrector"], st["snr"], st["n_steps_each"])
            return lambda key, score_fn, shape: sample_pc(
                key, sde, score_fn, shape, predictor, corrector,
                num_steps=st["num_steps"], eps=eps, denoise=denoise,
            )  # fmt: skip
        if st["method"] == "ode":
            return lambda key, score_fn, shape: sample_ode(
                key, sde, score_fn, shape, st["solver"], st["rtol"], st["atol"], eps=eps,
                denoise=denoise,
            )  # fmt: skip
        if st["method"] == "sde":
            return lambda key, score_fn, shape: sample_sde(
                key, sde, score_fn, shape, st["solver"], st["num_steps"], eps=eps, denoise=denoise
            )
        solver = get_fast_solver(st["solver"], **st["options"])
        choose("time grid", st["grid"], GRIDS)
        return lambda key, score_fn, shape: sample_fast(
            key, sde, score_fn, shape, solver, st["num_steps"], grid=st["grid"], eps=eps,
            denoise=denoise,
        )  # fmt: skip
    except (ValueError, TypeError) as error:
        raise ConfigError(f"config.sampling: {error}") from None


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
    get_model(config)
    _choose(config, "model.output", ("noise", "score", "x0"))
    _choose(config, "model.time_input", ("t", "std"))
    get_optimizer(config)
    get_loss(config)
    get_sampler(config, sde)
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
    if name in data_lib.TOY_DATASETS and config.model.name != "mlp":
        raise ConfigError(
            f"config.model.name={config.model.name!r} is an image network; data set {name!r} "
            "is 2-D points: use model.name='mlp'"
        )
