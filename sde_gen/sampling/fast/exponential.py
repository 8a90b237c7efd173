r"""Exponential integrators of the probability-flow ODE: DDIM, DPM-Solver(++), UniPC.

For a linear SDE, `x_t | x_0 ~ N(a_t x_0, s_t^2 I)`, write the log-SNR
`lambda_t = log(a_t / s_t)` (decreasing in t, `sde.log_snr`), the data prediction
`x0(x, t) = (x + s_t^2 score) / a_t` (Tweedie) and the noise prediction
`eps(x, t) = -s_t score`. Variation of constants solves the linear part of the PF-ODE
exactly (Lu et al. 2022, eqs. 3.4 and 9):

    x_t = (s_t / s_u) x_u + s_t int_{lambda_u}^{lambda_t} e^lambda x0(x_lambda) d lambda
        = (a_t / a_u) x_u - a_t int_{lambda_u}^{lambda_t} e^-lambda eps(x_lambda) d lambda,

and the solvers differ in how they approximate the remaining integral from a few score
evaluations. All of them are written once in terms of `a`, `s` and `lambda`, so they work
for VP, sub-VP, VE and a user's linear SDE alike.

- `DDIM(eta)`: first order in x0 (Song, Meng & Ermon 2021); `eta > 0` adds the noise of
  DDIM's generalized process (`eta = 1`: DDPM's ancestral step).
- `DPMSolver(order=2|3)`: DPM-Solver-2 and -3, single-step, noise prediction (Lu et al.
  2022, Algorithms 1-2 with r1 = 1/2 and r1, r2 = 1/3, 2/3).
- `DPMSolverMultistep(order=2|3)`: DPM-Solver++(2M) and (3M), multistep, data prediction
  (Lu et al. 2022b, Algorithm 2 and its third-order extension); noise prediction optional.
- `UniPC(order, variant)`: the unified predictor-corrector of Zhao et al. 2023 (data or
  noise prediction, B(h) = h or e^h - 1): a multistep predictor of order p whose new score
  evaluation also feeds a corrector of order p + 1, at no extra cost.
"""

from __future__ import annotations

import abc
import dataclasses
import functools
import math

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, PRNGKeyArray

from ..._checks import is_concrete
from ...sde import batch_broadcast, batch_times
from ..base import tweedie
from .base import AbstractFastSolver, State, noise_prediction

# The rules for lowering the order over the last steps (`lower_order_final`): "below_10"
# (the reference DPM-Solver's: only with fewer than 10 steps, where it steadies sampling),
# "always" (the reference UniPC's, at every step count), "never", an int N (below N steps),
# or "auto": chosen per grid by `for_grid` (the tables below), "below_10" on its own.
LOWER_ORDER_FINAL = ("auto", "below_10", "always", "never")
_LOWER_ORDER_FINAL_BELOW = 10
# The weight of the second divided difference in the third-order multistep step
# (`d2_weight`): "taylor" (2 phi_3, order 3) or "reference" (phi_3, the reference
# implementations', order 2).
D2_WEIGHTS = ("taylor", "reference")


def _lower_order_final(value):
    if value is True:
        return "below_10"
    if value is False:
        return "never"
    if isinstance(value, (int, np.integer)) and value >= 1:
        return int(value)
    if isinstance(value, str) and value.lower() in LOWER_ORDER_FINAL:
        return value.lower()
    raise ValueError(
        f"unknown lower_order_final {value!r}; choose one of {', '.join(LOWER_ORDER_FINAL)} "
        "or a number of steps N >= 1 (lower below N steps)"
    )


def _d2_weight(value):
    if isinstance(value, str) and value.lower() in D2_WEIGHTS:
        return value.lower()
    raise ValueError(f"unknown d2_weight {value!r}; choose one of {', '.join(D2_WEIGHTS)}")


# What lower_order_final="auto" becomes on each grid kind; "explicit" is any given array of
# times (the optimized grids included). Measured on the power-law Gaussian of
# benchmarks/sampler_accuracy.py (docs/sampling.md, "Two conventions"): on grids uniform in
# t or sqrt(t) the reference UniPC's "always" is more accurate up to about 30 steps (below
# 30 only on sqrt(t), where it costs the order beyond); the noise-prediction and 2M methods
# are best not lowered at all off the log-SNR grid. The log-SNR grid keeps "below_10".
AUTO_LOWER_ORDER_FINAL = {
    # (class, prediction, solver_order) -> grid kind -> rule
    ("UniPC", "data", 3): {"uniform": "always", "quadratic": 30, "explicit": "never"},
    ("DPMSolverMultistep", "data", 3): {"uniform": "always", "quadratic": 30,
                                        "explicit": "never"},
    ("DPMSolverMultistep", "data", 2): {"uniform": "never", "karras": "never",
                                        "quadratic": "never", "explicit": "never"},
    ("DPMSolverMultistep", "noise", 2): {"uniform": "never", "karras": "never",
                                         "quadratic": "never", "explicit": "never"},
    ("DPMSolverMultistep", "noise", 3): {"uniform": "never", "karras": "never",
                                         "quadratic": "never", "explicit": "never"},
}  # fmt: skip


class DDIM(AbstractFastSolver):
    r"""DDIM: `x_t = a_t x0 + sqrt(s_t^2 - c^2) eps_hat + c z`, `eps_hat = (x_u - a_u x0) / s_u`.

    `c = eta s_t sqrt(1 - e^{-2h})`, `h = lambda_t - lambda_u`, is the std of the forward
    chain's posterior `q(x_t | x_u, x_0)` times eta. `eta = 0` is the deterministic DDIM, the
    first-order exponential integrator `x_t = (s_t / s_u) x_u + a_t (1 - e^{-h}) x0`;
    `eta = 1` is DDPM's ancestral step, whose noise `z` is drawn from the step's key. Ends
    with the Tweedie step by default, as DDIM's last step to `alpha = 1` does.

    Classifier guidance in DDIM's form (Dhariwal & Nichol 2021, Algorithm 2): with
    `classifier(x, t) -> log p_t(y | x)` of shape `(B,)` and `classifier_scale` s, every
    step uses `eps_hat - s_u s grad_x log p_u(y | x)` and the `x0` it implies. This is the
    same guided score as `classifier_guidance(score_fn, classifier, s)`, in noise form.
    """

    eta: float = eqx.field(static=True, default=0.0)
    classifier: object = None
    classifier_scale: float = 1.0

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

    @property
    def order(self):
        return 1

    @property
    def evals_per_step(self):
        return 1

    @property
    def denoise(self):
        return True

    def final_denoise(self, sde, score_fn, x, t):
        a_t, s_t = (batch_broadcast(c, x) for c in sde.marginal(t))
        x0 = tweedie(sde, score_fn, x, t)
        return self._guided(sde, x, t, x0, (x - a_t * x0) / s_t)[0]

    def _guided(self, sde, x, u, x0, eps_hat):
        """ADM's guided noise `eps_hat - s_u scale grad log p_u(y | x)` and its `x0`."""
        if self.classifier is None:
            return x0, eps_hat
        a_u, s_u = (batch_broadcast(c, x) for c in sde.marginal(u))
        grad = jax.grad(lambda x: jnp.sum(self.classifier(x, batch_times(u, x))))(x)
        eps_hat = eps_hat - s_u * self.classifier_scale * grad
        return (x - s_u * eps_hat) / a_u, eps_hat

    def init(self, sde, score_fn, x, ts):
        return State(x)

    def step(self, sde, score_fn, state, inputs):
        x, u, t = state.x, inputs.u, inputs.t
        (a_u, s_u), (a_t, s_t) = sde.marginal(u), sde.marginal(t)
        x0 = tweedie(sde, score_fn, x, u)
        eps_hat = (x - batch_broadcast(a_u, x) * x0) / batch_broadcast(s_u, x)
        x0, eps_hat = self._guided(sde, x, u, x0, eps_hat)
        h = sde.log_snr(t) - sde.log_snr(u)
        c = self.eta * s_t * jnp.sqrt(-jnp.expm1(-2 * h))
        out = batch_broadcast(a_t, x) * x0 + batch_broadcast(jnp.sqrt(s_t**2 - c**2), x) * eps_hat
        if self.eta == 0.0:  # skip drawing noise that would be multiplied by zero
            return State(out)
        noise = jax.random.normal(inputs.key, x.shape, x.dtype)
        return State(out + batch_broadcast(c, x) * noise)


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
    def evals_per_step(self):
        return self.solver_order

    def init(self, sde, score_fn, x, ts):
        return State(x)

    def step(self, sde, score_fn, state, inputs):
        x, u, t = state.x, inputs.u, inputs.t
        eps = functools.partial(noise_prediction, sde, score_fn)

        def coeffs(t):
            a, s = sde.marginal(t)
            return batch_broadcast(a, x), batch_broadcast(s, x)

        lam_u = sde.log_snr(u)
        h = sde.log_snr(t) - lam_u
        (a_u, _), (a_t, s_t) = coeffs(u), coeffs(t)
        eps_u = eps(x, u)
        if self.solver_order == 2:
            mid = sde.log_snr_inverse(lam_u + 0.5 * h)
            a_m, s_m = coeffs(mid)
            x_mid = a_m / a_u * x - s_m * jnp.expm1(0.5 * h) * eps_u
            return State(a_t / a_u * x - s_t * jnp.expm1(h) * eps(x_mid, mid))
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
        x_t = a_t / a_u * x - s_t * jnp.expm1(h) * eps_u - s_t / r2 * (jnp.expm1(h) / h - 1.0) * d_2
        return State(x_t)


_PREDICTIONS = ("data", "noise")


class History(eqx.Module):
    """The last `order` model outputs (data or noise predictions) and log-SNRs, newest last."""

    m: Array  # (order, B, *dims)
    lam: Array  # (order,)

    def push(self, m: Array, lam: Array) -> History:
        return History(
            jnp.concatenate([self.m[1:], m[None]]), jnp.concatenate([self.lam[1:], lam[None]])
        )

    def ratios(self, k: int, h: Array) -> list[Array]:
        """`r_j = (l_j - l_0) / h` for j = 1 .. k - 1 (negative: the history lies behind)."""
        return [(self.lam[-1 - j] - self.lam[-1]) / h for j in range(1, k)]

    def differences(self, k: int, h: Array) -> tuple[list[Array], list[Array]]:
        """The ratios `r_j` and `D_j = (m_j - m_0) / r_j ~ h m'` for j = 1 .. k - 1."""
        rs = self.ratios(k, h)
        return rs, [(self.m[-1 - j] - self.m[-1]) / r for j, r in zip(range(1, k), rs)]


class MultistepState(eqx.Module):
    """The current `x` and the history of model outputs."""

    x: Array
    hist: History


class MultistepInputs(eqx.Module):
    """Step i's key, times `u > t`, their log-SNRs and the step's order."""

    key: PRNGKeyArray
    u: Array
    t: Array
    lam_u: Array
    lam_t: Array
    order: Array


class Coefficients(eqx.Module):
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
    """Multistep exponential integrators, in data or noise prediction.

    One score evaluation per step: the model output at each new grid point enters the
    next steps' polynomial, through the history in the state. The first steps use the
    history available (orders 1, 2, ...); `lower_order_final` says when the last steps
    lower the order again: "below_10" (with fewer than 10 steps, the reference DPM-Solver's
    rule; True means this), "always" (the reference UniPC's), "never" (False), an int N
    (below N steps), or "auto" (the default), which `FastSampler` resolves per time grid
    (`for_grid`, from `AUTO_LOWER_ORDER_FINAL`; "below_10" elsewhere and on its own). The
    last step takes no new evaluation (its result is the answer). Subclasses implement
    `predict` and may implement `correct`.
    """

    solver_order: eqx.AbstractVar[int]
    prediction: eqx.AbstractVar[str]
    lower_order_final: eqx.AbstractVar[str | int]

    @property
    def evals_per_step(self):
        return 1

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
    def predict(self, k: int, x: Array, hist: History, step: Coefficients) -> Array:
        """The order-k step from the newest history time u to t."""

    def correct(self, k: int, x: Array, x_t: Array, m_t: Array, hist: History, step: Coefficients):
        """Refine the step's result `x_t` given the model output `m_t` there (default: keep)."""
        return x_t

    def for_grid(self, grid: str) -> AbstractMultistepSolver:
        """This solver with `lower_order_final="auto"` replaced by its choice for `grid`."""
        if self.lower_order_final != "auto":
            return self
        table = AUTO_LOWER_ORDER_FINAL.get(
            (type(self).__name__, self.prediction, self.solver_order), {}
        )
        return dataclasses.replace(self, lower_order_final=table.get(grid, "below_10"))

    def step_orders(self, num_steps: int) -> np.ndarray:
        """The order of each of the `num_steps` steps."""
        i = np.arange(1, num_steps + 1)
        orders = np.minimum(i, self.solver_order)
        rule = self.lower_order_final
        below = {"always": math.inf, "never": 0}.get(rule, _LOWER_ORDER_FINAL_BELOW)
        if num_steps < (rule if isinstance(rule, int) else below):
            orders = np.minimum(orders, num_steps + 1 - i)
        return orders

    def _model(self, sde, score_fn, x, t):
        model = tweedie if self.prediction == "data" else noise_prediction
        return model(sde, score_fn, x, t)

    def _coefficients(self, sde, inputs, x):
        (a_u, s_u), (a_t, s_t) = sde.marginal(inputs.u), sde.marginal(inputs.t)
        h = inputs.lam_t - inputs.lam_u
        if self.prediction == "data":
            ratio, amp, hh = s_t / s_u, a_t, -h
        else:
            ratio, amp, hh = a_t / a_u, s_t, h
        return Coefficients(batch_broadcast(ratio, x), batch_broadcast(amp, x), h, hh)

    def _switch(self, method, k, *args):
        """`method(k, *args)` for the traced order k in 1 .. solver_order."""
        branches = [functools.partial(method, j) for j in range(1, self.solver_order + 1)]
        return jax.lax.switch(k - 1, branches, *args)

    def init(self, sde, score_fn, x, ts):
        p = self.solver_order
        m = self._model(sde, score_fn, x, ts[0])
        return MultistepState(x, History(jnp.stack([m] * p), jnp.full((p,), sde.log_snr(ts)[0])))

    def step_inputs(self, key, sde, ts):
        lams = sde.log_snr(ts)
        orders = jnp.asarray(self.step_orders(len(ts) - 1))
        keys = jax.random.split(key, len(ts) - 1)
        return MultistepInputs(keys, ts[:-1], ts[1:], lams[:-1], lams[1:], orders)

    def step(self, sde, score_fn, state, inputs):
        x, hist = state.x, state.hist
        c = self._coefficients(sde, inputs, x)
        x_t = self._switch(self.predict, inputs.order, x, hist, c)
        m_t = self._model(sde, score_fn, x_t, inputs.t)
        x_t = self._switch(self.correct, inputs.order, x, x_t, m_t, hist, c)
        return MultistepState(x_t, hist.push(m_t, inputs.lam_t))

    def final_step(self, sde, score_fn, state, inputs):
        c = self._coefficients(sde, inputs, state.x)
        return self._switch(self.predict, inputs.order, state.x, state.hist, c)


class DPMSolverMultistep(AbstractMultistepSolver):
    r"""Multistep DPM-Solver: DPM-Solver++(2M) and (3M) in data prediction (Lu et al. 2022b).

    With the newest model outputs `m_0, m_1, m_2` at log-SNRs `l_0 = lambda_u > l_1 > l_2`,
    `D1_0 = (m_0 - m_1) / r_0`, `r_0 = (l_0 - l_1) / h` (and `Coefficients.g`):

    - order 1 (DDIM): `x_t = ratio x_u - amp g_0 m_0`;
    - order 2 (2M, the paper's Algorithm 2): `m_0` replaced by `m_0 + D1_0 / 2`;
    - order 3 (3M): the Taylor expansion to second order,
      `x_t = ratio x_u - amp (g_0 m_0 + g_1 D_1 + 2 g_2 D_2)` with the divided differences
      `D_1 ~ h m'` and `D_2 ~ h^2 m'' / 2` from three points. (The reference implementation
      weights `D_2` by `g_2` instead of `2 g_2`, which leaves it second order, but is
      up to 1.5x more accurate at 10-20 steps in noise prediction on the sqrt(t) grid:
      `d2_weight` chooses, "taylor" (`2 g_2`, the default) or "reference" (`g_2`); see
      `docs/sampling.md`.)

    `prediction="noise"` gives the multistep DPM-Solver in noise prediction (the same
    formulas on `eps` with `hh = h`), which Lu et al. recommend for unconditional sampling.
    """

    solver_order: int = eqx.field(static=True, default=2)
    prediction: str = eqx.field(static=True, default="data")
    lower_order_final: str | int = eqx.field(
        static=True, default="auto", converter=_lower_order_final
    )
    d2_weight: str = eqx.field(static=True, default="taylor", converter=_d2_weight)

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
        weight = 1.0 if self.d2_weight == "reference" else 2.0
        return x_t - step.amp * (g[1] * d_1 + weight * g[2] * d_2)


class UniPC(AbstractMultistepSolver):
    r"""UniPC (Zhao et al. 2023): multistep predictor UniP-p plus corrector UniC.

    A step of order k from u to t uses the newest model outputs `m_0` (at u) and
    `m_1 .. m_{k-1}`, their differences `D_j = (m_j - m_0) / r_j`,
    `r_j = (l_j - lambda_u) / h`, and the first-order part `x_lin = ratio x_u - amp g_0 m_0`
    (see `Coefficients`):

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
    lower_order_final: str | int = eqx.field(
        static=True, default="auto", converter=_lower_order_final
    )

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
