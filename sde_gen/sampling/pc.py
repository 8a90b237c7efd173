r"""Predictor-corrector sampling (Song et al. 2021, Algorithm 1), as one `jax.lax.scan`.

The time grid is `t_i = linspace(T, eps, num_steps)` followed by 0: step i runs the
corrector at `t_i` and then the predictor from `t_i` to `t_{i+1}`. The last step ends at
t = 0 and, with `denoise=True`, returns its noise-free mean (score_sde's final denoising;
for the Euler-Maruyama predictor this is Tweedie's `x0` to first order in eps).
"""

from __future__ import annotations

from collections.abc import Callable

import equinox as eqx
import jax
import jax.numpy as jnp
from jaxtyping import Array, PRNGKeyArray

from .._checks import check_sampling, check_steps
from ..score import ScoreFn
from ..sde import AbstractSDE
from .base import AbstractSampler, build_or_none, check_bool, check_eps_setting, short_name
from .correctors import CORRECTORS, AbstractCorrector, get_corrector
from .predictors import PREDICTORS, AbstractPredictor, get_predictor

# project(key, x, x_mean, t) -> (x, x_mean): a constraint applied after every sub-step.
Project = Callable[[PRNGKeyArray, Array, Array, Array], tuple[Array, Array]]


class PCSampler(AbstractSampler):
    """Predictor-corrector sampler: `num_steps` predictor steps from T to 0 on
    `linspace(T, eps, num_steps)` and 0, each after a corrector at the same time.

    Args:
        predictor: "euler_maruyama", "reverse_diffusion", "ancestral", None, or an
            `AbstractPredictor`.
        corrector: "langevin", None, or an `AbstractCorrector` (e.g.
            `LangevinCorrector(snr=0.16, n_steps=1)`).
        num_steps: number of grid times between T and eps.
        eps: the last grid time before the final step to 0.
        denoise: return the noise-free mean of the final step (default True).
        snr, n_corrector_steps: settings of a corrector given by name (keyword-only; they
            become the corrector object's fields).
    """

    predictor: AbstractPredictor | None
    corrector: AbstractCorrector | None
    num_steps: int
    eps: float
    denoise: bool

    method = "pc"
    _registries = {"predictor": PREDICTORS, "corrector": CORRECTORS}

    def __init__(
        self,
        predictor: str | AbstractPredictor | None = "euler_maruyama",
        corrector: str | AbstractCorrector | None = None,
        num_steps: int = 1000,
        eps: float = 1e-3,
        denoise: bool = True,
        *,
        snr: float = 0.16,
        n_corrector_steps: int = 1,
    ):
        self.predictor = get_predictor(predictor)
        self.corrector = get_corrector(corrector, snr=snr, n_steps=n_corrector_steps)
        self.num_steps = check_steps("num_steps", num_steps)
        self.eps = check_eps_setting(eps)
        self.denoise = check_bool("denoise", denoise)

    def __check_init__(self):
        if self.predictor is None and self.corrector is None:
            raise ValueError("the PC sampler needs a predictor or a corrector; both are None")

    @property
    def nfe(self) -> int:
        """Score evaluations per sample: `num_steps` times those of a predictor and a
        corrector call."""
        per_step = (self.predictor.nfe if self.predictor else 0) + (
            self.corrector.nfe if self.corrector else 0
        )
        return self.num_steps * per_step

    def __call__(self, key, sde, score_fn, shape, *, x_init=None):
        shape, x_init = check_sampling(sde, score_fn, shape, self.eps, x_init)
        return self.chain(key, sde, score_fn, shape, x_init=x_init), self.nfe

    def chain(
        self,
        key: PRNGKeyArray,
        sde: AbstractSDE,
        score_fn: ScoreFn,
        shape: tuple[int, ...],
        *,
        x_init: Array | None = None,
        project: Project | None = None,
    ) -> Array:
        """The PC chain without argument checks (jitted). `project(key, x, x_mean, t)`,
        when given, constrains the state after each corrector (at t) and predictor step
        (at t_next), e.g. to impute known values."""
        return _pc_chain(self, key, sde, score_fn, shape, x_init, project)

    def _name_parts(self):
        names = tuple(
            "none" if obj is None else short_name(obj, registry).lower()
            for obj, registry in ((self.predictor, PREDICTORS), (self.corrector, CORRECTORS))
        )
        return (*names, self.num_steps), build_or_none(PCSampler, *names, self.num_steps)


@eqx.filter_jit
def _pc_chain(sampler: PCSampler, key, sde, score_fn, shape, x_init, project):
    predictor, corrector = sampler.predictor, sampler.corrector
    init_key, loop_key = jax.random.split(key)
    x = sde.prior_sample(init_key, shape) if x_init is None else jnp.asarray(x_init)
    ts = jnp.linspace(sde.T, sampler.eps, sampler.num_steps, dtype=x.dtype)
    ts_next = jnp.concatenate([ts[1:], jnp.zeros((1,), x.dtype)])

    def step(carry, inputs):
        x, _ = carry
        step_key, t, t_next = inputs
        corrector_key, predictor_key = jax.random.split(step_key)
        x_mean = x
        if corrector is not None:
            x, x_mean = corrector(corrector_key, sde, score_fn, x, t, t_next)
            if project is not None:
                x, x_mean = project(jax.random.fold_in(corrector_key, 1), x, x_mean, t)
        if predictor is not None:
            x, x_mean = predictor(predictor_key, sde, score_fn, x, t, t_next)
            if project is not None:
                x, x_mean = project(jax.random.fold_in(predictor_key, 1), x, x_mean, t_next)
        return (x, x_mean), None

    keys = jax.random.split(loop_key, sampler.num_steps)
    (x, x_mean), _ = jax.lax.scan(step, (x, x), (keys, ts, ts_next))
    return x_mean if sampler.denoise else x


def sample_pc(
    key: PRNGKeyArray,
    sde: AbstractSDE,
    score_fn: ScoreFn,
    shape: tuple[int, ...],
    *,
    predictor: str | AbstractPredictor | None = "euler_maruyama",
    corrector: str | AbstractCorrector | None = None,
    snr: float = 0.16,
    n_corrector_steps: int = 1,
    num_steps: int = 1000,
    eps: float = 1e-3,
    denoise: bool = True,
    x_init: Array | None = None,
) -> tuple[Array, int]:
    """Draw a batch of `shape` from the reverse-time SDE with a predictor-corrector sampler.

    `PCSampler(predictor, corrector, num_steps, eps, denoise, snr=..., n_corrector_steps=...)`
    called on `(key, sde, score_fn, shape, x_init=x_init)`; see `PCSampler` for the settings.

    Args:
        key: randomness for the prior draw (unless `x_init`) and every step.
        sde: the forward SDE.
        score_fn: `score_fn(x, t) -> array shaped like x`; t is `(B,)`.
        shape: `(B, *dims)`.
        predictor, corrector, snr, n_corrector_steps, num_steps: as in `PCSampler`.
        eps: the last grid time before the final step to 0.
        denoise: return the noise-free mean of the final step (default True).
        x_init: start here instead of a prior draw (shape `shape`).

    Returns:
        `(x, nfe)`: the samples and the number of score evaluations per sample (an int).
    """
    sampler = PCSampler(
        predictor, corrector, num_steps, eps, denoise, snr=snr, n_corrector_steps=n_corrector_steps
    )
    return sampler(key, sde, score_fn, shape, x_init=x_init)
