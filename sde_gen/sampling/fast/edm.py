r"""EDM's deterministic sampler (Karras et al. 2022, Algorithm 1): Heun's method in sigma."""

from __future__ import annotations

import equinox as eqx
from jaxtyping import Array

from ...sde import batch_broadcast
from ..base import tweedie
from .base import AbstractFastSolver


class EDMState(eqx.Module):
    """`y = x / a(t)`, the scaled state EDM integrates."""

    y: Array


class HeunEDM(AbstractFastSolver):
    r"""EDM's deterministic sampler (Karras et al. 2022, Algorithm 1): Heun in sigma.

    With `y = x / a` and `sigma = s / a = exp(-lambda)`, the PF-ODE of every linear SDE is
    `dy / d sigma = (y - x0(a y, t)) / sigma`. Each step is an Euler step plus Heun's
    trapezoidal correction, two evaluations per step. EDM's last step, Euler to sigma = 0,
    is Tweedie's `x0`: that is this method's default `denoise`.
    """

    @property
    def order(self):
        return 2

    @property
    def evals_per_step(self):
        return 2

    @property
    def denoise(self):
        return True

    def init(self, sde, score_fn, x, ts):
        return EDMState(x / batch_broadcast(sde.marginal(ts[0])[0], x))

    def step(self, sde, score_fn, state, inputs):
        y, u, t = state.y, inputs.u, inputs.t

        def sigma(t):
            a, s = sde.marginal(t)
            return batch_broadcast(s / a, y)

        def slope(y, t):
            a = batch_broadcast(sde.marginal(t)[0], y)
            return (y - tweedie(sde, score_fn, a * y, t)) / sigma(t)

        d_sigma = sigma(t) - sigma(u)
        d_u = slope(y, u)
        y_euler = y + d_sigma * d_u
        return EDMState(y + 0.5 * d_sigma * (d_u + slope(y_euler, t)))

    def final_step(self, sde, score_fn, state, inputs):
        y = self.step(sde, score_fn, state, inputs).y
        return batch_broadcast(sde.marginal(inputs.t)[0], y) * y
