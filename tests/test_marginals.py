"""The default (adaptive quadrature) marginal of a user's linear SDE against closed forms.

Every SDE here is VP-type, `f = -beta / 2`, `g^2 = beta`, defined by its coefficients only,
so `a(t) = exp(-B(t) / 2)` and `std(t) = sqrt(1 - exp(-B(t)))` with `B = int_0^t beta` in
closed form. The 1e-6 relative accuracy is checked in float64, where rounding is far below
it; float32 adds rounding of about 50 ulps of `1 + |log a|` (see `AbstractLinearSDE`).
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import sde_gen as sg

RTOL = 1e-6
S = 0.008  # the cosine schedule's offset (Nichol & Dhariwal 2021)


class _UserVP(sg.AbstractLinearSDE):
    """A VP-type SDE given by `beta` alone, as a user would write it."""

    T: float = 1.0

    def drift_coeff(self, t):
        return -0.5 * self.beta(t)

    def diffusion(self, t):
        return jnp.sqrt(self.beta(t))


class CosineVP(_UserVP):
    """`alpha_bar(t) = cos^2(phi(t)) / cos^2(phi(0))`, `phi(t) = (t + s) / (1 + s) pi / 2`,
    `beta = -d log alpha_bar / dt = pi / (1 + s) tan(phi(t))`: a pole at t = 1, just past T."""

    T: float = 0.999

    def beta(self, t):
        return jnp.pi / (1 + S) * jnp.tan(_phase(jnp.asarray(t)))

    @staticmethod
    def integrated_beta(t):
        return -2 * (np.log(np.cos(_phase(t))) - np.log(np.cos(_phase(0.0))))


class CosineVPClosedForm(CosineVP):
    """The same SDE with its marginal given in closed form: the documented override."""

    def marginal(self, t):
        t = jnp.asarray(t, jnp.result_type(float))
        log_alpha_bar = 2 * (jnp.log(jnp.cos(_phase(t))) - jnp.log(jnp.cos(_phase(0.0))))
        return jnp.exp(log_alpha_bar / 2), jnp.sqrt(-jnp.expm1(log_alpha_bar))


def _phase(t):
    return (t + S) / (1 + S) * (np.pi / 2)


class SqrtSingularVP(_UserVP):
    """`beta = c / sqrt(T - t)`, integrable: `B(t) = 2 c (sqrt(T) - sqrt(T - t))`."""

    c: float = 2.0

    def beta(self, t):
        return self.c / jnp.sqrt(self.T - jnp.asarray(t))

    def integrated_beta(self, t):
        return 2 * self.c * (np.sqrt(self.T) - np.sqrt(self.T - t))


class PiecewiseConstantVP(_UserVP):
    """`beta` jumps from 1 to 12 at t = 0.3 (between the initial panel edges)."""

    def beta(self, t):
        return jnp.where(jnp.asarray(t) < 0.3, 1.0, 12.0)

    @staticmethod
    def integrated_beta(t):
        return np.where(t < 0.3, t, 0.3 + 12.0 * (t - 0.3))


class PiecewiseLinearVP(_UserVP):
    """`beta` rises 0.1 + 20 t to 12.1 at t = 0.6, then falls with slope -15: a kink."""

    def beta(self, t):
        t = jnp.asarray(t)
        return jnp.where(t < 0.6, 0.1 + 20.0 * t, 12.1 - 15.0 * (t - 0.6))

    @staticmethod
    def integrated_beta(t):
        u = t - 0.6
        return np.where(t < 0.6, 0.1 * t + 10.0 * t**2, 3.66 + 12.1 * u - 7.5 * u**2)


class PoleVP(_UserVP):
    """`beta = 1 / (T - t)`: `B(T) = inf`, not integrable."""

    def beta(self, t):
        return 1.0 / (self.T - jnp.asarray(t))


def _closed_form(sde, t):
    b = sde.integrated_beta(np.asarray(t, np.float64))
    return np.exp(-b / 2), np.sqrt(-np.expm1(-b))


def _grid(T):
    """Uniform and log-spaced times, up to T itself and just below it."""
    return np.unique(np.concatenate([np.linspace(0, T, 97)[1:], np.geomspace(1e-6, T, 40),
                                     T - np.geomspace(1e-9, 1e-2, 8), [0.3, 0.6]]))  # fmt: skip


@pytest.mark.parametrize(
    "sde",
    [CosineVP(), SqrtSingularVP(), PiecewiseConstantVP(), PiecewiseLinearVP()],
    ids=["cosine", "sqrt_singular", "piecewise_constant", "piecewise_linear"],
)
def test_default_marginal_matches_closed_form_to_1e6(sde):
    with jax.enable_x64(True):
        t = _grid(sde.T)
        t = t[t <= sde.T]
        a, std = sde.marginal(jnp.asarray(t))
        a_ref, std_ref = _closed_form(sde, t)
        np.testing.assert_allclose(a, a_ref, rtol=RTOL)
        np.testing.assert_allclose(std, std_ref, rtol=RTOL)


def test_cosine_prior_std_is_exact_and_the_same_alone_as_in_a_batch():
    """The 48-point Gauss-Legendre marginal gave std(T) = 0.9417 here. One mesh serves
    every t, so a time alone gets exactly what it gets in a batch."""
    with jax.enable_x64(True):
        sde = CosineVP()
        t = jnp.asarray(_grid(sde.T))
        np.testing.assert_allclose(sde.prior_std(), _closed_form(sde, sde.T)[1], rtol=RTOL)
        np.testing.assert_allclose(sde.prior_std(), sde.marginal(t)[1][-1], rtol=1e-13)


def test_default_marginal_differentiates_in_t_and_in_the_schedule():
    """`d a / dt = f a` and `d std^2 / dt = 2 f std^2 + g^2` under jit, vmap and grad; the
    gradient in a schedule parameter matches a central difference."""
    with jax.enable_x64(True):
        sde = CosineVP()
        t = jnp.asarray([1e-3, 0.2, 0.5, 0.9])

        @jax.jit
        def derivatives(t):
            a_and_var = lambda s: jnp.stack([sde.marginal(s)[0], sde.marginal(s)[1] ** 2])
            return jax.vmap(jax.jacobian(a_and_var))(t).T, a_and_var(t)

        (da, dvar), (a, var) = derivatives(t)
        f, g2 = sde.drift_coeff(t), sde.diffusion(t) ** 2
        np.testing.assert_allclose(da, f * a, rtol=1e-6)
        np.testing.assert_allclose(dvar, 2 * f * var + g2, rtol=1e-5)

        @jax.jit
        def std_and_grad(c):
            return jax.value_and_grad(lambda c: SqrtSingularVP(c=c).marginal(0.7)[1])(c)

        h = 1e-6
        (lo, _), (hi, _) = std_and_grad(jnp.asarray(2.0 - h)), std_and_grad(jnp.asarray(2.0 + h))
        np.testing.assert_allclose(std_and_grad(jnp.asarray(2.0))[1], (hi - lo) / (2 * h), 1e-6)


def test_non_integrable_schedule_raises_naming_accuracy_estimate_and_t():
    with jax.enable_x64(True):
        sde = PoleVP()
        # Times before the pole are still fine: B(t) = -log(1 - t).
        a, std = sde.marginal(jnp.asarray([0.5, 0.75]))
        np.testing.assert_allclose(a, [0.5**0.5, 0.5], rtol=RTOL)
        np.testing.assert_allclose(std, [0.5**0.5, 0.75**0.5], rtol=RTOL)
        with pytest.raises(ValueError, match=r"accuracy 1e-06 was not reached at t=1: the error"):
            sde.marginal(jnp.asarray([0.5, 1.0]))
        with pytest.raises(Exception, match="accuracy 1e-06 was not reached"):
            jax.block_until_ready(jax.jit(sde.prior_std)())


def test_loglik_of_a_gaussian_through_the_cosine_user_sde_is_the_closed_form():
    """With the exact score of N(mu, diag(v)) under the coefficients-only cosine SDE, the
    PF-ODE log-likelihood (the prior swapped for the exact p_T, as in test_likelihood) is the
    closed-form log p_eps(x), the marginals taken from the closed-form twin. The old
    quadrature marginal was 0.4 nats off here (1.0 nats in the model's own logp)."""
    eps = 1e-5
    sde, twin = CosineVP(), CosineVPClosedForm()
    density = sg.Gaussian(jnp.asarray([1.0, -0.5]), jnp.asarray([0.3, 0.8]))
    key = jax.random.key(0)
    x = density.sample(key, 16)
    logp, z, _ = sg.log_likelihood(key, sde, density.score_fn(sde), x, divergence="exact")
    recovered = logp - twin.prior_logp(z) + density.marginal(twin, twin.T).log_prob(z)
    exact = density.log_prob_t(twin, x, eps)
    assert np.abs(np.asarray(recovered - exact)).max() / 2 < 1e-3
    np.testing.assert_allclose(sde.prior_logp(z), twin.prior_logp(z), rtol=1e-5)
