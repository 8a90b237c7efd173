r"""Predictor-corrector sampling (Song et al. 2021, Algorithm 1), as one `jax.lax.scan`.

The time grid is `t_i = linspace(T, eps, num_steps)` followed by 0: step i runs the
corrector at `t_i` and then the predictor from `t_i` to `t_{i+1}`. The last step ends at
t = 0 and, with `denoise=True`, returns its noise-free mean (score_sde's final denoising).
"""

from __future__ import annotations

import equinox as eqx
import jax
import jax.numpy as jnp
from jaxtyping import Array, PRNGKeyArray

from .._checks import check_sampling, check_steps
from ..score import ScoreFn
from ..sde import AbstractSDE
from .correctors import AbstractCorrector, get_corrector
from .predictors import AbstractPredictor, get_predictor


def sample_pc(
    key: PRNGKeyArray,
    sde: AbstractSDE,
    score_fn: ScoreFn,
    shape: tuple[int, ...],
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

    Args:
        key: randomness for the prior draw (unless `x_init`) and every step.
        sde: the forward SDE.
        score_fn: `score_fn(x, t) -> array shaped like x`; t is `(B,)`.
        shape: `(B, *dims)`.
        predictor: "euler_maruyama", "reverse_diffusion", "ancestral", None, or an
            `AbstractPredictor`.
        corrector: "langevin", None, or an `AbstractCorrector`.
        snr, n_corrector_steps: settings of a corrector given by name.
        num_steps: number of grid times between T and eps.
        eps: the last grid time before the final step to 0.
        denoise: return the mean of the final step instead of the sample.
        x_init: start here instead of a prior draw (shape `shape`).

    Returns:
        `(x, nfe)`: the samples and the number of score evaluations per sample.
    """
    predictor = get_predictor(predictor)
    corrector = get_corrector(corrector, snr=snr, n_steps=n_corrector_steps)
    if predictor is None and corrector is None:
        raise ValueError("sample_pc needs a predictor or a corrector; both are None")
    num_steps = check_steps("num_steps", num_steps)
    shape, x_init = check_sampling(sde, score_fn, shape, eps, x_init)
    x = _pc_loop(key, sde, score_fn, shape, predictor, corrector, num_steps, eps, denoise, x_init)
    return x, pc_nfe(predictor, corrector, num_steps)


def pc_nfe(predictor, corrector, num_steps: int) -> int:
    return num_steps * ((predictor.nfe if predictor else 0) + (corrector.nfe if corrector else 0))


@eqx.filter_jit
def _pc_loop(
    key, sde, score_fn, shape, predictor, corrector, num_steps, eps, denoise, x_init, project=None
):
    """The PC chain; `project(key, x, x_mean, t)`, when given, constrains the state after
    each corrector (at t) and predictor step (at t_next), e.g. to impute known values."""
    init_key, loop_key = jax.random.split(key)
    x = sde.prior_sample(init_key, shape) if x_init is None else jnp.asarray(x_init)
    ts = jnp.linspace(sde.T, eps, num_steps, dtype=x.dtype)
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

    keys = jax.random.split(loop_key, num_steps)
    (x, x_mean), _ = jax.lax.scan(step, (x, x), (keys, ts, ts_next))
    return x_mean if denoise else x
