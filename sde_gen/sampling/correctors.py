r"""Correctors: score-based MCMC at a fixed time t (Song et al. 2021, Algorithm 4-5).

`LangevinCorrector(snr, n_steps)` runs Langevin dynamics `x <- x + e s + sqrt(2 e) z` with
step `e = 2 alpha (snr ||z|| / ||s||)^2`. As in score_sde, `||s||` and `||z||` are
per-example norms averaged over the batch, giving one step size for the whole batch: a
per-example step blows up where the score nearly vanishes. `alpha = a(t)^2 / a(t_next)^2`
is the mean coefficient of the forward step ending at t (`1 - beta_i` for VP, 1 for VE).
"""

from __future__ import annotations

import abc

import equinox as eqx
import jax
import jax.numpy as jnp
from jaxtyping import Array, PRNGKeyArray

from .._checks import check_positive, check_steps, choose
from ..score import ScoreFn
from ..sde import AbstractSDE, batch_times
from .predictors import require_linear


class AbstractCorrector(eqx.Module):
    """MCMC steps that leave `p_t` (approximately) invariant; `nfe` evaluations per call."""

    @property
    @abc.abstractmethod
    def nfe(self) -> int:
        """Score evaluations per call."""

    @abc.abstractmethod
    def __call__(
        self,
        key: PRNGKeyArray,
        sde: AbstractSDE,
        score_fn: ScoreFn,
        x: Array,
        t: Array,
        t_next: Array,
    ) -> tuple[Array, Array]:
        """Returns `(x, x_mean)` at the same time t; t_next is the sampler's next time."""


class LangevinCorrector(AbstractCorrector):
    """`n_steps` Langevin steps at signal-to-noise ratio `snr`."""

    snr: float = 0.16
    n_steps: int = eqx.field(static=True, default=1)

    def __check_init__(self):
        check_positive("LangevinCorrector", snr=self.snr)
        check_steps("n_steps", self.n_steps)

    @property
    def nfe(self) -> int:
        return self.n_steps

    def __call__(self, key, sde, score_fn, x, t, t_next):
        a_ts, _ = require_linear(sde, "the Langevin corrector").transition(t_next, t)
        alpha = a_ts**2
        t_batch = batch_times(t, x)

        def step(carry, step_key):
            x, _ = carry
            score = score_fn(x, t_batch)
            noise = jax.random.normal(step_key, x.shape, x.dtype)
            score_norm = jnp.mean(jnp.linalg.norm(score.reshape(x.shape[0], -1), axis=-1))
            noise_norm = jnp.mean(jnp.linalg.norm(noise.reshape(x.shape[0], -1), axis=-1))
            step_size = 2 * alpha * (self.snr * noise_norm / score_norm) ** 2
            x_mean = x + step_size * score
            return (x_mean + jnp.sqrt(2 * step_size) * noise, x_mean), None

        (x, x_mean), _ = jax.lax.scan(step, (x, x), jax.random.split(key, self.n_steps))
        return x, x_mean


CORRECTORS = {"langevin": LangevinCorrector, "none": None}


def get_corrector(
    corrector: str | AbstractCorrector | None, snr: float = 0.16, n_steps: int = 1
) -> AbstractCorrector | None:
    """A corrector object from a name in `CORRECTORS` (built with snr, n_steps), or as given."""
    if isinstance(corrector, AbstractCorrector):
        return corrector
    cls = choose("corrector", corrector, CORRECTORS)
    return None if cls is None else cls(snr=snr, n_steps=n_steps)
