r"""Fast solvers of the probability-flow ODE: exponential integrators and EDM's Heun.

For a linear SDE, `x_t | x_0 ~ N(a_t x_0, s_t^2 I)`, write the log-SNR
`lambda_t = log(a_t / s_t)` (decreasing in t, `sde.log_snr`), the data prediction
`x0(x, t) = (x + s_t^2 score) / a_t` (Tweedie) and the noise prediction
`eps(x, t) = -s_t score`. Variation of constants solves the linear part of the PF-ODE
exactly (Lu et al. 2022, eqs. 3.4 and 9):

    x_t = (s_t / s_u) x_u + s_t int_{lambda_u}^{lambda_t} e^lambda x0(x_lambda) d lambda
        = (a_t / a_u) x_u - a_t int_{lambda_u}^{lambda_t} e^-lambda eps(x_lambda) d lambda,

and the solvers differ in how they approximate the remaining integral from a few score
evaluations. All of them are written once in terms of `a`, `s` and `lambda`, so they work
for VP, sub-VP, VE and a user's linear SDE alike, and with any score function (a network,
a closed form, a guided composition).

- `DDIM(eta)`: first order in x0 (Song, Meng & Ermon 2021); `eta > 0` adds the noise of
  DDIM's generalized process (`eta = 1`: DDPM's ancestral step).
- `DPMSolver(order=2|3)`: DPM-Solver-2 and -3, single-step, noise prediction (Lu et al.
  2022, Algorithms 1-2 with r1 = 1/2 and r1, r2 = 1/3, 2/3).
- `DPMSolverMultistep(order=2|3)`: DPM-Solver++(2M) and (3M), multistep, data prediction
  (Lu et al. 2022b, Algorithm 2 and its third-order extension); noise prediction optional.
- `UniPC(order, variant)`: the unified predictor-corrector of Zhao et al. 2023 (data or
  noise prediction, B(h) = h or e^h - 1): a multistep predictor of order p whose new score
  evaluation also feeds a corrector of order p + 1, at no extra cost.
- `HeunEDM()`: Karras et al. 2022, Algorithm 1: Heun's method on
  `d(x/a)/d sigma = (x/a - x0) / sigma`, `sigma = s / a = exp(-lambda)`.

Time grids (`time_grid`) run from T down to eps: uniform in t, uniform in lambda
("logsnr", DPM-Solver's choice), EDM's `sigma^(1/rho)`-uniform ("karras", rho = 7), or
uniform in sqrt(t) ("quadratic", DDIM's choice for CIFAR-10).

NFE: `num_steps` steps cost `evals_per_step * num_steps` score evaluations (the multistep
solvers reuse each evaluation, so one per step); `denoise` adds one for the final Tweedie
step `x <- x0(x, eps)`, which is the step to sigma = 0 that DDIM and EDM end with.
"""

from __future__ import annotations

import abc
import dataclasses
import functools
import math
from typing import ClassVar

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, ArrayLike, PRNGKeyArray

from .._checks import check_eps, check_sampling, check_steps, choose, is_concrete
from ..score import ScoreFn
from ..sde import AbstractLinearSDE, AbstractSDE, batch_broadcast, batch_times
from .predictors import require_linear

# Below this many steps, the multistep solvers lower their order over the last steps, as the
# reference implementation of DPM-Solver does: it steadies sampling with very few steps.
_LOWER_ORDER_FINAL_BELOW = 10


# --------------------------------------------------------------------------------------
# Time grids


def _grid_uniform(sde, num_steps, eps, rho):
    return jnp.linspace(sde.T, eps, num_steps + 1)


def _grid_logsnr(sde, num_steps, eps, rho):
    lam = jnp.linspace(sde.log_snr(sde.T), sde.log_snr(eps), num_steps + 1)
    return sde.log_snr_inverse(lam)


def _grid_karras(sde, num_steps, eps, rho):
    inv_max, inv_min = (jnp.exp(-sde.log_snr(t) / rho) for t in (sde.T, eps))
    sigma = jnp.linspace(inv_max, inv_min, num_steps + 1) ** rho
    return sde.log_snr_inverse(-jnp.log(sigma))


def _grid_quadratic(sde, num_steps, eps, rho):
    return jnp.linspace(math.sqrt(sde.T), math.sqrt(eps), num_steps + 1) ** 2


GRIDS = {
    "uniform": _grid_uniform,
    "logsnr": _grid_logsnr,
    "karras": _grid_karras,
    "quadratic": _grid_quadratic,
}


def time_grid(
    sde: AbstractLinearSDE,
    num_steps: int,
    grid: str = "logsnr",
    eps: float = 1e-3,
    rho: float = 7.0,
) -> Array:
    """The `num_steps + 1` decreasing times `t_0 = T > ... > t_M = eps` of a fast solver.

    `grid`: "uniform" (in t), "logsnr" (uniform in lambda), "karras" (uniform in
    `sigma^(1/rho)`, `sigma = exp(-lambda)`; EDM's rho = 7) or "quadratic" (uniform in sqrt(t)).
    The end points are exact: `t_0 = T` and `t_M = eps`.
    """
    require_linear(sde, "time_grid")
    choose("time grid", grid, GRIDS)
    num_steps = check_steps("num_steps", num_steps)
    check_eps(eps, sde.T)
    _check_rho(rho)
    return _make_grid(sde, num_steps, grid, eps, rho)


def _check_rho(rho):
    if not (isinstance(rho, (int, float)) and rho > 0):
        raise ValueError(f"rho must be a positive number; got {rho!r}")


def _make_grid(sde, num_steps, grid, eps, rho):
    ts = GRIDS[grid.lower()](sde, num_steps, eps, rho)
    # Pin the end points: the inverse of lambda is exact only to rounding.
    return ts.at[0].set(sde.T).at[-1].set(eps)


# --------------------------------------------------------------------------------------
# Solvers


def _data_prediction(sde: AbstractLinearSDE, score_fn: ScoreFn, x: Array, t: Array) -> Array:
    """Tweedie's `x0(x, t) = E[x_0 | x_t = x]` from the score."""
    return sde.x0_from_score(x, t, score_fn(x, batch_times(t, x)))


def _noise_prediction(sde: AbstractLinearSDE, score_fn: ScoreFn, x: Array, t: Array) -> Array:
    """`eps(x, t) = -std(t) score(x, t)`, the noise a network in "noise" mode predicts."""
    return -batch_broadcast(sde.marginal(t)[1], x) * score_fn(x, batch_times(t, x))


class AbstractFastSolver(eqx.Module):
    """A fixed-grid solver of the probability-flow ODE of an `AbstractLinearSDE`.

    Subclasses set `evals_per_step` (score evaluations per step), `order` (of the global
    error on smooth problems) and `denoise` (whether the method ends with the Tweedie step
    by default), and implement `solve`.
    """

    evals_per_step: ClassVar[int]
    denoise: ClassVar[bool] = False

    def final_denoise(self, sde, score_fn, x, t):
        """The final Tweedie step `x0(x, t)`."""
        return _data_prediction(sde, score_fn, x, t)

    @property
    @abc.abstractmethod
    def order(self) -> int:
        """Order of convergence of the global error in the step size."""

    @abc.abstractmethod
    def solve(
        self,
        key: PRNGKeyArray,
        sde: AbstractLinearSDE,
        score_fn: ScoreFn,
        x: Array,
        ts: Array,
    ) -> Array:
        """Map `x` at `ts[0]` along the PF-ODE to `ts[-1]` on the grid `ts` (decreasing)."""

    def nfe(self, num_steps: int) -> int:
        return self.evals_per_step * num_steps


class DDIM(AbstractFastSolver):
    r"""DDIM: `x_t = a_t x0 + sqrt(s_t^2 - c^2) eps_hat + c z`, `eps_hat = (x_u - a_u x0) / s_u`.

    `c = eta s_t sqrt(1 - e^{-2h})`, `h = lambda_t - lambda_u`, is the std of the forward
    chain's posterior `q(x_t | x_u, x_0)` times eta. `eta = 0` is the deterministic DDIM, the
    first-order exponential integrator `x_t = (s_t / s_u) x_u + a_t (1 - e^{-h}) x0`;
    `eta = 1` is DDPM's ancestral step. Ends with the Tweedie step by default, as DDIM's last
    step to `alpha = 1` does.

    Classifier guidance in DDIM's form (Dhariwal & Nichol 2021, Algorithm 2): with
    `classifier(x, t) -> log p_t(y | x)` of shape `(B,)` and `classifier_scale` s, every
    step uses `eps_hat - s_u s grad_x log p_u(y | x)` and the `x0` it implies. This is the
    same guided score as `classifier_guidance(score_fn, classifier, s)`, in noise form.
    """

    eta: float = eqx.field(static=True, default=0.0)
    classifier: object = None
    classifier_scale: float = 1.0
    evals_per_step: ClassVar[int] = 1
    denoise: ClassVar[bool] = True

    def __check_init__(self):
        if is_concrete(self.eta) and not 0.0 <= float(self.eta) <= 1.0:
            raise ValueError(f"DDIM: eta must lie in [0, 1]; got {self.eta}")
        if self.classifier is not None and not callable(self.classifier):
            raise ValueError(
                f"DDIM: classifier must be a callable (x, t) -> log p_t(y | x); got "
                f"{type(self.classifier).__name__}"
            )
        scale = self.classifier_scale
        if is_concrete(scale) and not (np.isfinite(scale) and float(scale) >= 0):
            raise ValueError(f"DDIM: classifier_scale must be a finite number >= 0; got {scale}")

    def final_denoise(self, sde, score_fn, x, t):
        a_t, s_t = (batch_broadcast(c, x) for c in sde.marginal(t))
        x0 = _data_prediction(sde, score_fn, x, t)
        return self._guided(sde, x, t, x0, (x - a_t * x0) / s_t)[0]

    def _guided(self, sde, x, u, x0, eps_hat):
        """ADM's guided noise `eps_hat - s_u scale grad log p_u(y | x)` and its `x0`."""
        if self.classifier is None:
            return x0, eps_hat
        a_u, s_u = (batch_broadcast(c, x) for c in sde.marginal(u))
        grad = jax.grad(lambda x: jnp.sum(self.classifier(x, batch_times(u, x))))(x)
        eps_hat = eps_hat - s_u * self.classifier_scale * grad
        return (x - s_u * eps_hat) / a_u, eps_hat

    @property
    def order(self):
        return 1

    def solve(self, key, sde, score_fn, x, ts):
        def step(x, inputs):
            step_key, u, t = inputs
            (a_u, s_u), (a_t, s_t) = sde.marginal(u), sde.marginal(t)
            x0 = _data_prediction(sde, score_fn, x, u)
            eps_hat = (x - batch_broadcast(a_u, x) * x0) / batch_broadcast(s_u, x)
            x0, eps_hat = self._guided(sde, x, u, x0, eps_hat)
            h = sde.log_snr(t) - sde.log_snr(u)
            c = self.eta * s_t * jnp.sqrt(-jnp.expm1(-2 * h))
            out = (
                batch_broadcast(a_t, x) * x0 + batch_broadcast(jnp.sqrt(s_t**2 - c**2), x) * eps_hat
            )
            if self.eta == 0.0:  # skip drawing noise that would be multiplied by zero
                return out, None
            return out + batch_broadcast(c, x) * jax.random.normal(step_key, x.shape, x.dtype), None

        keys = jax.random.split(key, len(ts) - 1)
        return jax.lax.scan(step, x, (keys, ts[:-1], ts[1:]))[0]


class DPMSolver(AbstractFastSolver):
    r"""DPM-Solver-2 or -3: single-step, noise prediction (Lu et al. 2022, Algorithms 1-2).

    Order 2 (r1 = 1/2) is the exponential midpoint rule,
    `x_t = (a_t / a_u) x_u - s_t (e^h - 1) eps(x_mid, t_mid)`; order 3 (r1, r2 = 1/3, 2/3)
    takes two intermediate evaluations. Intermediate times come from `sde.log_snr_inverse`.
    """

    solver_order: int = eqx.field(static=True, default=2)

    def __check_init__(self):
        if self.solver_order not in (2, 3):
            raise ValueError(f"DPMSolver: order must be 2 or 3; got {self.solver_order}")

    @property
    def order(self):
        return self.solver_order

    @property
    def evals_per_step(self):  # type: ignore[override]
        return self.solver_order

    def solve(self, key, sde, score_fn, x, ts):
        eps = functools.partial(_noise_prediction, sde, score_fn)

        def coeffs(t):
            a, s = sde.marginal(t)
            return batch_broadcast(a, x), batch_broadcast(s, x)

        def step(x, inputs):
            u, t = inputs
            lam_u = sde.log_snr(u)
            h = sde.log_snr(t) - lam_u
            (a_u, _), (a_t, s_t) = coeffs(u), coeffs(t)
            eps_u = eps(x, u)
            if self.solver_order == 2:
                mid = sde.log_snr_inverse(lam_u + 0.5 * h)
                a_m, s_m = coeffs(mid)
                x_mid = a_m / a_u * x - s_m * jnp.expm1(0.5 * h) * eps_u
                return a_t / a_u * x - s_t * jnp.expm1(h) * eps(x_mid, mid), None
            r1, r2 = 1.0 / 3.0, 2.0 / 3.0
            t1, t2 = sde.log_snr_inverse(lam_u + r1 * h), sde.log_snr_inverse(lam_u + r2 * h)
            (a_1, s_1), (a_2, s_2) = coeffs(t1), coeffs(t2)
            x_1 = a_1 / a_u * x - s_1 * jnp.expm1(r1 * h) * eps_u
            d_1 = eps(x_1, t1) - eps_u
            x_2 = (
                a_2 / a_u * x
                - s_2 * jnp.expm1(r2 * h) * eps_u
                - s_2 * (r2 / r1) * (jnp.expm1(r2 * h) / (r2 * h) - 1.0) * d_1
            )
            d_2 = eps(x_2, t2) - eps_u
            x_t = (
                a_t / a_u * x
                - s_t * jnp.expm1(h) * eps_u
                - s_t / r2 * (jnp.expm1(h) / h - 1.0) * d_2
            )
            return x_t, None

        return jax.lax.scan(step, x, (ts[:-1], ts[1:]))[0]


_PREDICTIONS = ("data", "noise")


class _History(eqx.Module):
    """The last `order` model outputs (data or noise predictions) and log-SNRs, newest last."""

    m: Array  # (order, B, *dims)
    lam: Array  # (order,)

    def push(self, m: Array, lam: Array) -> _History:
        return _History(
            jnp.concatenate([self.m[1:], m[None]]), jnp.concatenate([self.lam[1:], lam[None]])
        )

    def ratios(self, k: int, h: Array) -> list[Array]:
        """`r_j = (l_j - l_0) / h` for j = 1 .. k - 1 (negative: the history lies behind)."""
        return [(self.lam[-1 - j] - self.lam[-1]) / h for j in range(1, k)]

    def differences(self, k: int, h: Array) -> tuple[list[Array], list[Array]]:
        """The ratios `r_j` and `D_j = (m_j - m_0) / r_j ~ h m'` for j = 1 .. k - 1."""
        rs = self.ratios(k, h)
        return rs, [(self.m[-1 - j] - self.m[-1]) / r for j, r in zip(range(1, k), rs)]


class _Step(eqx.Module):
    """Coefficients of one exponential-integrator step from u to t, h = lambda_t - lambda_u.

    Both parameterizations read `x_t = ratio x_u - amp sum_n n! g_n D_n` with
    `g_n = hh phi_{n+1}(hh)` and `D_n ~ h^n m^(n) / n!` (Lu et al. 2022, 2022b):
    data prediction: `ratio = s_t / s_u`, `amp = a_t`, `hh = -h`;
    noise prediction: `ratio = a_t / a_u`, `amp = s_t`, `hh = h`.
    """

    ratio: Array
    amp: Array
    h: Array
    hh: Array

    def g(self, n: int) -> list[Array]:
        """`[g_0, ..., g_{n-1}]`: `g_0 = e^hh - 1`, `g_{j+1} = g_j / hh - 1 / (j + 1)!`."""
        out = [jnp.expm1(self.hh)]
        for j in range(1, n):
            out.append(out[-1] / self.hh - 1.0 / math.factorial(j))
        return out


class AbstractMultistepSolver(AbstractFastSolver):
    """Multistep exponential integrators on a `jax.lax.scan`, in data or noise prediction.

    One score evaluation per step: the model output at each new grid point enters the
    next steps' polynomial. The first steps use the history available (orders 1, 2, ...);
    below 10 steps the last steps lower the order again (`lower_order_final`).
    Subclasses implement `predict` and may implement `correct`.
    """

    solver_order: eqx.AbstractVar[int]
    prediction: eqx.AbstractVar[str]
    lower_order_final: eqx.AbstractVar[bool]
    evals_per_step: ClassVar[int] = 1

    def _check(self, name: str, orders: tuple[int, ...]) -> None:
        if self.solver_order not in orders:
            valid = ", ".join(map(str, orders))
            raise ValueError(
                f"{name}: solver_order must be one of {valid}; got {self.solver_order}"
            )
        if self.prediction not in _PREDICTIONS:
            raise ValueError(
                f"{name}: unknown prediction {self.prediction!r}; choose one of data, noise"
            )

    @abc.abstractmethod
    def predict(self, k: int, x: Array, hist: _History, step: _Step) -> Array:
        """The order-k step from the newest history time u to t."""

    def correct(self, k: int, x: Array, x_t: Array, m_t: Array, hist: _History, step: _Step):
        """Refine the step's result `x_t` given the model output `m_t` there (default: keep)."""
        return x_t

    def step_orders(self, num_steps: int) -> np.ndarray:
        """The order of each of the `num_steps` steps."""
        i = np.arange(1, num_steps + 1)
        orders = np.minimum(i, self.solver_order)
        if self.lower_order_final and num_steps < _LOWER_ORDER_FINAL_BELOW:
            orders = np.minimum(orders, num_steps + 1 - i)
        return orders

    def solve(self, key, sde, score_fn, x, ts):
        p = self.solver_order
        model = functools.partial(
            _data_prediction if self.prediction == "data" else _noise_prediction, sde, score_fn
        )
        lams = sde.log_snr(ts)
        orders = jnp.asarray(self.step_orders(len(ts) - 1))

        def coefficients(u, t, lam_u, lam_t):
            (a_u, s_u), (a_t, s_t) = sde.marginal(u), sde.marginal(t)
            h = lam_t - lam_u
            if self.prediction == "data":
                ratio, amp, hh = s_t / s_u, a_t, -h
            else:
                ratio, amp, hh = a_t / a_u, s_t, h
            return _Step(batch_broadcast(ratio, x), batch_broadcast(amp, x), h, hh)

        def branches(method):
            return [functools.partial(method, j) for j in range(1, p + 1)]

        def step(carry, inputs):
            x, hist = carry
            k, u, t, lam_u, lam_t = inputs
            c = coefficients(u, t, lam_u, lam_t)
            x_t = jax.lax.switch(k - 1, branches(self.predict), x, hist, c)
            m_t = model(x_t, t)
            x_t = jax.lax.switch(k - 1, branches(self.correct), x, x_t, m_t, hist, c)
            return (x_t, hist.push(m_t, lam_t)), None

        m = model(x, ts[0])
        hist = _History(jnp.stack([m] * p), jnp.full((p,), lams[0]))
        inputs = (orders[:-1], ts[:-2], ts[1:-1], lams[:-2], lams[1:-1])
        (x, hist), _ = jax.lax.scan(step, (x, hist), inputs)
        # The last step needs no new evaluation: its result is the answer.
        c = coefficients(ts[-2], ts[-1], lams[-2], lams[-1])
        return jax.lax.switch(orders[-1] - 1, branches(self.predict), x, hist, c)


class DPMSolverMultistep(AbstractMultistepSolver):
    r"""Multistep DPM-Solver: DPM-Solver++(2M) and (3M) in data prediction (Lu et al. 2022b).

    With the newest model outputs `m_0, m_1, m_2` at log-SNRs `l_0 = lambda_u > l_1 > l_2`,
    `D1_0 = (m_0 - m_1) / r_0`, `r_0 = (l_0 - l_1) / h` (and `_Step`'s `g_n`):

    - order 1 (DDIM): `x_t = ratio x_u - amp g_0 m_0`;
    - order 2 (2M, the paper's Algorithm 2): `m_0` replaced by `m_0 + D1_0 / 2`;
    - order 3 (3M): the Taylor expansion to second order,
      `x_t = ratio x_u - amp (g_0 m_0 + g_1 D_1 + 2 g_2 D_2)` with the divided differences
      `D_1 ~ h m'` and `D_2 ~ h^2 m'' / 2` from three points. (The reference implementation
      weights `D_2` by `g_2` instead of `2 g_2`, which leaves it second order; see
      `docs/sampling.md`.)

    `prediction="noise"` gives the multistep DPM-Solver in noise prediction (the same
    formulas on `eps` with `hh = h`), which Lu et al. recommend for unconditional sampling.
    """

    solver_order: int = eqx.field(static=True, default=2)
    prediction: str = eqx.field(static=True, default="data")
    lower_order_final: bool = eqx.field(static=True, default=True)

    def __check_init__(self):
        self._check("DPMSolverMultistep", (2, 3))

    @property
    def order(self):
        return self.solver_order

    def predict(self, k, x, hist, step):
        g = step.g(3)
        m_0 = hist.m[-1]
        x_t = step.ratio * x - step.amp * g[0] * m_0
        if k == 1:
            return x_t
        rs = hist.ratios(k, step.h)  # negative: the history lies behind u
        d1_0 = (hist.m[-2] - m_0) / rs[0]
        if k == 2:
            return x_t - 0.5 * step.amp * g[0] * d1_0
        d1_1 = (hist.m[-3] - hist.m[-2]) / (rs[1] - rs[0])
        d_2 = (d1_0 - d1_1) / -rs[1]
        d_1 = d1_0 - rs[0] * d_2
        return x_t - step.amp * (g[1] * d_1 + 2.0 * g[2] * d_2)


class UniPC(AbstractMultistepSolver):
    r"""UniPC (Zhao et al. 2023): multistep predictor UniP-p plus corrector UniC.

    A step of order k from u to t uses the newest model outputs `m_0` (at u) and
    `m_1 .. m_{k-1}`, their differences `D_j = (m_j - m_0) / r_j`,
    `r_j = (l_j - lambda_u) / h`, and the first-order part `x_lin = ratio x_u - amp g_0 m_0`
    (see `_Step`):

    - predictor: `x_t = x_lin - amp B(h) sum_j rho^p_j D_j` (order k);
    - corrector, with the new evaluation `m_t` that the next step needs anyway:
      `x_t <- x_lin - amp B(h) (sum_j rho^c_j D_j + rho^c_k (m_t - m_0))` (order k + 1).

    The weights solve `sum_j r_j^(i-1) rho_j = b_i = i! g_i / B(h)` (with `r_k = 1` for the
    corrector); `B(h) = hh` ("bh1") or `e^hh - 1` ("bh2"). The last step is not corrected
    (its evaluation would serve nothing else).
    """

    solver_order: int = eqx.field(static=True, default=3)
    prediction: str = eqx.field(static=True, default="data")
    variant: str = eqx.field(static=True, default="bh1")
    lower_order_final: bool = eqx.field(static=True, default=True)

    def __check_init__(self):
        self._check("UniPC", (1, 2, 3))
        if self.variant not in ("bh1", "bh2"):
            raise ValueError(f"UniPC: unknown variant {self.variant!r}; choose one of bh1, bh2")

    @property
    def order(self):
        return self.solver_order + 1

    def _b_h(self, step):
        return step.hh if self.variant == "bh1" else jnp.expm1(step.hh)

    def _weights(self, rs, step, n):
        """Solve the n x n system `sum_j r_j^(i-1) rho_j = i! g_i / B(h)`, i = 1 .. n."""
        g = step.g(n + 1)
        b = jnp.stack([g[i] * math.factorial(i) / self._b_h(step) for i in range(1, n + 1)])
        powers = jnp.stack([jnp.stack(rs[:n]) ** i for i in range(n)])
        return jnp.linalg.solve(powers, b)

    def _x_lin(self, x, hist, step):
        return step.ratio * x - step.amp * jnp.expm1(step.hh) * hist.m[-1]

    def predict(self, k, x, hist, step):
        x_lin = self._x_lin(x, hist, step)
        if k == 1:
            return x_lin
        rs, ds = hist.differences(k, step.h)
        # order 2: the reference implementation's rho = 1/2 (second order either way)
        rho = jnp.asarray([0.5]) if k == 2 else self._weights(rs, step, k - 1)
        return x_lin - step.amp * self._b_h(step) * sum(r * d for r, d in zip(rho, ds))

    def correct(self, k, x, x_t, m_t, hist, step):
        x_lin = self._x_lin(x, hist, step)
        rs, ds = hist.differences(k, step.h)
        # order 1: the reference implementation's rho = 1/2 (trapezoidal)
        rho = jnp.asarray([0.5]) if k == 1 else self._weights(rs + [jnp.ones_like(step.h)], step, k)
        residual = sum(r * d for r, d in zip(rho[:-1], ds)) + rho[-1] * (m_t - hist.m[-1])
        return x_lin - step.amp * self._b_h(step) * residual


class HeunEDM(AbstractFastSolver):
    r"""EDM's deterministic sampler (Karras et al. 2022, Algorithm 1): Heun in sigma.

    With `y = x / a` and `sigma = s / a = exp(-lambda)`, the PF-ODE of every linear SDE is
    `dy / d sigma = (y - x0(a y, t)) / sigma`. Each step is an Euler step plus Heun's
    trapezoidal correction, two evaluations per step. EDM's last step, Euler to sigma = 0,
    is Tweedie's `x0`: that is this method's default `denoise`.
    """

    evals_per_step: ClassVar[int] = 2
    denoise: ClassVar[bool] = True

    @property
    def order(self):
        return 2

    def solve(self, key, sde, score_fn, x, ts):
        def sigma(t):
            a, s = sde.marginal(t)
            return batch_broadcast(s / a, x)

        def slope(y, t):
            a = batch_broadcast(sde.marginal(t)[0], y)
            return (y - _data_prediction(sde, score_fn, a * y, t)) / sigma(t)

        def step(y, inputs):
            u, t = inputs
            d_sigma = sigma(t) - sigma(u)
            d_u = slope(y, u)
            y_euler = y + d_sigma * d_u
            return y + 0.5 * d_sigma * (d_u + slope(y_euler, t)), None

        y = x / batch_broadcast(sde.marginal(ts[0])[0], x)
        y = jax.lax.scan(step, y, (ts[:-1], ts[1:]))[0]
        return batch_broadcast(sde.marginal(ts[-1])[0], y) * y


FAST_SOLVERS: dict[str, AbstractFastSolver] = {
    "ddim": DDIM(),
    "dpm_solver_2": DPMSolver(solver_order=2),
    "dpm_solver_3": DPMSolver(solver_order=3),
    "dpm_solver++_2m": DPMSolverMultistep(solver_order=2),
    "dpm_solver++_3m": DPMSolverMultistep(solver_order=3),
    "dpm_solver_2m": DPMSolverMultistep(solver_order=2, prediction="noise"),
    "dpm_solver_3m": DPMSolverMultistep(solver_order=3, prediction="noise"),
    "unipc": UniPC(),
    "heun_edm": HeunEDM(),
}


def get_fast_solver(method: str | AbstractFastSolver, **options) -> AbstractFastSolver:
    """A solver by name (see `FAST_SOLVERS`), with `options` replacing its fields (e.g.
    `get_fast_solver("ddim", eta=1.0)`), or the given `AbstractFastSolver` itself."""
    if isinstance(method, AbstractFastSolver):
        if options:
            raise ValueError("options apply to a solver given by name, not to a solver object")
        return method
    solver = choose("fast sampling method", method, FAST_SOLVERS)
    if not options:
        return solver
    fields = {f.name for f in dataclasses.fields(solver)}
    unknown = sorted(set(options) - fields)
    if unknown:
        valid = ", ".join(sorted(fields)) or "none"
        raise ValueError(f"unknown option(s) {unknown} for the {method!r} solver; valid: {valid}")
    return dataclasses.replace(solver, **options)


def _check_grid(grid, sde, num_steps, from_prior: bool):
    """A grid name, or an explicit decreasing array of `num_steps + 1` times in (0, T]
    (starting at T when the start is a prior draw)."""
    if isinstance(grid, str) or grid is None:
        choose("time grid", grid, GRIDS)
        return grid
    ts = jnp.asarray(grid, dtype=jnp.result_type(float))
    if ts.ndim != 1 or ts.shape[0] != num_steps + 1:
        raise ValueError(
            f"an explicit time grid must have num_steps + 1 = {num_steps + 1} times; "
            f"got shape {ts.shape}"
        )
    if is_concrete(ts):
        values = np.asarray(ts)
        if not (np.all(np.diff(values) < 0) and values[-1] > 0 and values[0] <= sde.T):
            raise ValueError(
                f"an explicit time grid must decrease strictly within (0, T = {sde.T}]; "
                f"got {values}"
            )
        if from_prior and values[0] != sde.T:
            raise ValueError(
                f"an explicit time grid starting at {values[0]} < T = {sde.T} needs x_init: "
                "the prior draw is a sample at T"
            )
    return ts


def sample_fast(
    key: PRNGKeyArray,
    sde: AbstractSDE,
    score_fn: ScoreFn,
    shape: tuple[int, ...],
    method: str | AbstractFastSolver,
    num_steps: int,
    grid: str | ArrayLike = "logsnr",
    eps: float = 1e-3,
    x_init: Array | None = None,
    denoise: bool | None = None,
    rho: float = 7.0,
) -> tuple[Array, int]:
    """Sample with a fast solver of the probability-flow ODE in `num_steps` steps.

    Args:
        key: randomness for the prior draw (unless `x_init`) and DDIM's noise (eta > 0).
        sde: an `AbstractLinearSDE`.
        score_fn: `score_fn(x, t) -> array shaped like x`; t is `(B,)`. Any composition
            (a network, a closed form, a guided score) works.
        shape: `(B, *dims)`.
        method: one of "ddim", "dpm_solver_2", "dpm_solver_3", "dpm_solver++_2m",
            "dpm_solver++_3m", "unipc", "heun_edm", or an `AbstractFastSolver` object such
            as `DDIM(eta=1.0)` or `UniPC(solver_order=2, variant="bh2")`.
        num_steps: steps from T to eps.
        grid: "logsnr", "uniform", "karras" (with `rho`), "quadratic", or an explicit
            decreasing array of `num_steps + 1` times (from T, or from the time of `x_init`).
        eps: the last time of the grid.
        x_init: start here instead of a prior draw (shape `shape`).
        denoise: end with Tweedie's `x0(x, eps)` (one more evaluation); None takes the
            method's default (True for "ddim" and "heun_edm", whose last step goes to
            sigma = 0; False for the DPM-Solvers and UniPC, as in their papers).

    Returns:
        `(x, nfe)`: the samples and the exact number of score evaluations per sample.
    """
    solver = get_fast_solver(method)
    sde = require_linear(sde, "sample_fast")
    num_steps = check_steps("num_steps", num_steps)
    shape, x_init = check_sampling(sde, score_fn, shape, eps, x_init)
    grid = _check_grid(grid, sde, num_steps, from_prior=x_init is None)
    _check_rho(rho)
    denoise = solver.denoise if denoise is None else bool(denoise)
    x = _sample_fast(key, sde, score_fn, shape, solver, num_steps, grid, eps, rho, denoise, x_init)
    return x, solver.nfe(num_steps) + int(denoise)


@eqx.filter_jit
def _sample_fast(key, sde, score_fn, shape, solver, num_steps, grid, eps, rho, denoise, x_init):
    init_key, solve_key = jax.random.split(key)
    x = sde.prior_sample(init_key, shape) if x_init is None else jnp.asarray(x_init)
    ts = _make_grid(sde, num_steps, grid, eps, rho) if isinstance(grid, str) else grid
    ts = ts.astype(x.dtype)
    x = solver.solve(solve_key, sde, score_fn, x, ts)
    if denoise:
        x = solver.final_denoise(sde, score_fn, x, ts[-1])
    return x
