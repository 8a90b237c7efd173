r"""Variational dequantization (Ho et al. 2019, Flow++; used for score models by Song,
Durkan, Murray & Ermon 2021, sec. 5).

Discrete data `k` in `{0, ..., L-1}^D` (L intensity levels, the bins tiling `[lo, hi]`)
gets a continuous model through `y = lo + (hi - lo) (k + u) / L`, `u in (0, 1)^D`. For any
density `q(u | k)`, Jensen's inequality bounds the discrete likelihood:

    -log P(k) <= E_{u ~ q}[ -log p(y) + log q_y(y | k) ],
    log q_y(y | k) = log q(u | k) + D log(L / (hi - lo)),

with equality when `q_y(. | k)` is the model's posterior `p(y) / P(k)` on the bin. Uniform
dequantization is `q = 1`, and `D log(L / (hi - lo))` is the offset of
`likelihood.bits_per_dim`, so the bound in bits/dim is `bits_per_dim(log p(y) - log q)`;
a learned `q` closes the Jensen gap.

`FlowDequantizer` is that `q`: a conditional normalizing flow from `eps ~ N(0, I)` to
`u = F(v)`, with `v` an elementwise affine map of eps followed by affine coupling layers
(alternating checkerboard masks), and F a mixture-of-logistics CDF per coordinate (Flow++);
scales, shifts and mixtures depend on the discrete image through a small convolutional
encoder (a dense one for vector data). Its log-density
is exact by the change of variables. `dequantize` draws `(y, log q(u | k))`.
"""

from __future__ import annotations

import math

import flax.linen as nn
import jax
import jax.numpy as jnp
from jaxtyping import Array, Float, PRNGKeyArray

from ._checks import check_steps
from .sde import sum_event


def _checkerboard(dims: tuple[int, ...], parity: int) -> Array:
    """A 0/1 mask over the event dimensions: a spatial checkerboard for images `(H, W, C)`
    (every channel of a pixel alike), alternating coordinates for vectors `(D,)`."""
    if len(dims) == 3:
        h, w, c = dims
        board = (jnp.arange(h)[:, None] + jnp.arange(w)[None, :] + parity) % 2
        return jnp.broadcast_to(board[:, :, None], (h, w, c)).astype(jnp.float32)
    d = math.prod(dims)
    return ((jnp.arange(d) + parity) % 2).reshape(dims).astype(jnp.float32)


class _Net(nn.Module):
    """The small network of the encoder and of each coupling layer: two 3x3 convolutions
    (dense layers for vector data) with SiLU, then a linear output of `out` channels (zero
    at initialisation when `zero_init`, so each coupling starts as the identity)."""

    features: int
    out: int
    zero_init: bool = False

    @nn.compact
    def __call__(self, h: Array) -> Array:
        image = h.ndim == 4
        layer = (lambda f, **kw: nn.Conv(f, (3, 3), **kw)) if image else nn.Dense
        for _ in range(2):
            h = nn.silu(layer(self.features)(h))
        init = nn.initializers.zeros if self.zero_init else nn.initializers.lecun_normal()
        return layer(self.out, kernel_init=init)(h)


class FlowDequantizer(nn.Module):
    """`q(u | k)`: `(u, log q(u | k)) = FlowDequantizer()(eps, x)` for `eps ~ N(0, I)`.

    Args (fields):
        features: width of the encoder and of the coupling networks.
        num_couplings: affine coupling layers (alternating checkerboard masks).
        num_logistics: components of the final mixture-of-logistics CDF onto (0, 1).

    Call with `eps` and `x` of the same shape `(B, H, W, C)` or `(B, D)`: `x` the discrete
    data in any fixed scaling (e.g. the pipeline's `k / (L - 1)`, centered or not). Returns
    `u` in `(0, 1)` shaped like x and `log q(u | k)` per example `(B,)`. At initialisation
    u is an equal mixture of logistic CDFs of `1.6 eps`, close to uniform.
    """

    features: int = 64
    num_couplings: int = 4
    num_logistics: int = 4

    @nn.compact
    def __call__(
        self, eps: Float[Array, "batch *dims"], x: Float[Array, "batch *dims"]
    ) -> tuple[Float[Array, "batch *dims"], Float[Array, " batch"]]:
        check_steps("num_couplings", self.num_couplings)
        dims = x.shape[1:]
        flat = len(dims) != 3
        as_net = (lambda a: a.reshape(a.shape[0], -1)) if flat else (lambda a: a)
        from_net = (lambda a: a.reshape(a.shape[0], *dims)) if flat else (lambda a: a)
        context = _Net(self.features, self.features)(as_net(x))
        # an elementwise affine start, log-scale 0.47 (scale 1.6): sigmoid(1.6 eps) is
        # within a few percent of uniform
        log_scale = self.param("log_scale", nn.initializers.constant(math.log(1.6)), dims)
        shift = self.param("shift", nn.initializers.zeros, dims)
        v = eps * jnp.exp(log_scale) + shift
        log_det = jnp.broadcast_to(jnp.sum(log_scale), (x.shape[0],))
        channels = 1 if flat else dims[-1]
        for i in range(self.num_couplings):
            mask = _checkerboard(dims, i % 2)
            net_in = jnp.concatenate([as_net(v * mask), context], axis=-1)
            out = _Net(self.features, 2 * (math.prod(dims) if flat else channels), zero_init=True)(
                net_in
            )
            s_raw, m = jnp.split(out, 2, axis=-1)
            s = jnp.tanh(from_net(s_raw)) * (1 - mask)  # bounded log-scales on the free half
            v = v * mask + (1 - mask) * (v * jnp.exp(s) + from_net(m))
            log_det = log_det + sum_event(s)
        # the map to (0, 1): a mixture-of-logistics CDF per coordinate whose weights, means
        # and scales depend on the data (Flow++'s elementwise flow), so each coordinate's
        # density on its bin can bend (a Gaussian through one sigmoid cannot)
        k = self.num_logistics
        per_position = math.prod(dims) if flat else channels
        out = _Net(self.features, 3 * k * per_position, zero_init=True)(context)
        out = out.reshape(*x.shape, 3, k)
        spread = jnp.linspace(-1.5, 1.5, k) if k > 1 else jnp.zeros(1)  # distinct components
        logits, means, log_scales = out[..., 0, :], out[..., 1, :] + spread, out[..., 2, :]
        log_weights = jax.nn.log_softmax(logits, axis=-1)
        z = (v[..., None] - means) * jnp.exp(-log_scales)
        u = jnp.sum(jnp.exp(log_weights) * nn.sigmoid(z), axis=-1)
        # d u / dv = sum_j w_j sigmoid(z_j) sigmoid(-z_j) / scale_j
        log_du = nn.log_sigmoid(z) + nn.log_sigmoid(-z) - log_scales + log_weights
        log_det = log_det + sum_event(jax.scipy.special.logsumexp(log_du, axis=-1))
        d = math.prod(dims)
        log_eps = -0.5 * sum_event(eps**2) - 0.5 * d * math.log(2 * math.pi)
        return u, log_eps - log_det


def bin_index(x: Array, n_levels: int, data_range: tuple[float, float]) -> Array:
    """The intensity level `k` of data on the grid `lo + (hi - lo) k / (L - 1)` (the
    pipeline's values without dequantization), as floats."""
    lo, hi = data_range
    return jnp.round((x - lo) / (hi - lo) * (n_levels - 1))


def dequantize(
    dequantizer: nn.Module,
    variables,
    key: PRNGKeyArray,
    x: Float[Array, "batch *dims"],
    n_levels: int,
    data_range: tuple[float, float],
) -> tuple[Float[Array, "batch *dims"], Float[Array, " batch"]]:
    """`(y, log q(u | k))`: a dequantized draw `y = lo + (hi - lo) (k + u) / L` of discrete
    data `x` (on the grid of `bin_index`) and the log-density of its `u` on the unit cube.
    `key`: one key, or one per example.

    The bound on `-log2 P(k) / D` is `likelihood.bits_per_dim(log p(y) - log q, ...)` with
    the data's levels and range (uniform dequantization: `log q = 0`).
    """
    lo, hi = data_range
    if key.shape == ():
        eps = jax.random.normal(key, x.shape, x.dtype)
    else:
        eps = jax.vmap(lambda k: jax.random.normal(k, x.shape[1:], x.dtype))(key)
    u, log_q = dequantizer.apply(variables, eps, x)
    return lo + (hi - lo) * (bin_index(x, n_levels, data_range) + u) / n_levels, log_q
