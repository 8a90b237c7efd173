"""Layers shared by the score networks: time embeddings, DDPM-initialized convolutions,
residual and attention blocks, and resampling (score_sde's `layers.py` and `layerspp.py`).

Images are NHWC. Initializers follow DDPM: variance scaling, fan-avg, uniform, with
`init_scale = 0` meaning a (numerically) zero-initialized last layer in a residual branch,
so that every block starts as the identity.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Float

from . import resample


def timestep_embedding(
    labels: Float[Array, " batch"], dim: int, max_positions: int = 10_000
) -> Float[Array, "batch dim"]:
    """Sinusoidal embedding of (continuous) time labels, as in DDPM and score_sde.

    `[sin(label * w_k), cos(label * w_k)]` with `w_k = max_positions^(-k / (dim/2 - 1))`,
    k = 0 .. dim/2 - 1, zero-padded to an odd `dim`.
    """
    half = dim // 2
    freqs = jnp.exp(-math.log(max_positions) * jnp.arange(half) / (half - 1))
    args = jnp.asarray(labels, jnp.float32)[:, None] * freqs[None, :]
    emb = jnp.concatenate([jnp.sin(args), jnp.cos(args)], axis=1)
    return jnp.pad(emb, ((0, 0), (0, dim % 2)))


class GaussianFourierProjection(nn.Module):
    """Random Fourier features `[sin(2 pi W x), cos(2 pi W x)]` with fixed `W ~ N(0, scale^2)`
    (Tancik et al. 2020; NCSN++ embeds `log sigma` with them)."""

    embedding_size: int = 256
    scale: float = 1.0

    @nn.compact
    def __call__(self, x: Float[Array, " batch"]) -> Float[Array, "batch 2*embedding_size"]:
        w = self.param("W", nn.initializers.normal(stddev=self.scale), (self.embedding_size,))
        w = jax.lax.stop_gradient(w)  # the frequencies are not trained
        proj = x[:, None] * w[None, :] * 2 * jnp.pi
        return jnp.concatenate([jnp.sin(proj), jnp.cos(proj)], axis=-1)


def class_embedding(y, batch: int, num_classes: int, null_class: bool, dim: int, owner: str):
    """Inside a compact module: the learned embedding `(B, dim)` of class labels `y`, or None
    for an unconditional network (`num_classes == 0`, which refuses labels).

    Labels are ints in `[0, num_classes)`; with `null_class` the extra label `num_classes`
    means "no class" (the unconditional model of classifier-free guidance). Concrete labels
    out of range are refused with the valid range.
    """
    if not num_classes:
        if y is not None:
            raise ValueError(f"class labels y given, but this {owner} has num_classes=0")
        return None
    n = num_classes + int(null_class)
    if y is None:
        raise ValueError(f"this {owner} is class-conditional ({num_classes} classes): pass y")
    y = jnp.asarray(y)
    if y.shape != (batch,):
        raise ValueError(f"y must hold one label per example, shape ({batch},); got {y.shape}")
    if not isinstance(y, jax.core.Tracer) and not np.all(
        (np.asarray(y) >= 0) & (np.asarray(y) < n)
    ):
        raise ValueError(f"class labels must lie in [0, {n}); got {np.asarray(y)}")
    return nn.Embed(n, dim)(y)


def default_init(scale: float = 1.0):
    """DDPM's initializer; scale 0 becomes 1e-10 (variance scaling needs a positive scale)."""
    return nn.initializers.variance_scaling(scale or 1e-10, "fan_avg", "uniform")


def conv3x3(x, features: int, stride: int = 1, bias: bool = True, init_scale: float = 1.0):
    return nn.Conv(
        features,
        (3, 3),
        strides=(stride, stride),
        padding="SAME",
        use_bias=bias,
        kernel_init=default_init(init_scale),
        bias_init=nn.initializers.zeros,
    )(x)


def conv1x1(x, features: int, bias: bool = True, init_scale: float = 1.0):
    return nn.Conv(
        features,
        (1, 1),
        use_bias=bias,
        kernel_init=default_init(init_scale),
        bias_init=nn.initializers.zeros,
    )(x)


def group_norm(x, groups: int = 0):
    """GroupNorm with `groups` groups; 0 (DDPM++'s choice) means min(channels / 4, 32).
    score_sde's DDPM network always uses 32, which agrees with min(channels / 4, 32) only
    from 128 channels up."""
    return nn.GroupNorm(num_groups=groups or min(x.shape[-1] // 4, 32))(x)


def _skip(x, h, skip_rescale: bool):
    """A residual connection, scaled by 1/sqrt(2) to keep unit variance when asked."""
    return (x + h) / math.sqrt(2.0) if skip_rescale else x + h


class NIN(nn.Module):
    """A per-pixel dense layer (network-in-network), DDPM's 1x1 projection."""

    features: int
    init_scale: float = 0.1

    @nn.compact
    def __call__(self, x):
        w = self.param("W", default_init(self.init_scale), (x.shape[-1], self.features))
        b = self.param("b", nn.initializers.zeros, (self.features,))
        return jnp.tensordot(x, w, axes=1) + b


class Combine(nn.Module):
    """Merges a pyramid branch into the main one: 1x1-project, then concatenate or sum."""

    method: str = "cat"

    @nn.compact
    def __call__(self, x, y):
        h = conv1x1(x, y.shape[-1])
        return jnp.concatenate([h, y], axis=-1) if self.method == "cat" else h + y


class AttnBlock(nn.Module):
    """Self-attention over all pixels (DDPM's single-head block) with a residual skip."""

    skip_rescale: bool = False
    init_scale: float = 0.0
    norm_groups: int = 0

    @nn.compact
    def __call__(self, x):
        b, height, width, c = x.shape
        h = group_norm(x, self.norm_groups)
        q, k, v = NIN(c)(h), NIN(c)(h), NIN(c)(h)
        w = jnp.einsum("bhwc,bHWc->bhwHW", q, k) * c**-0.5
        w = jax.nn.softmax(w.reshape(b, height, width, height * width), axis=-1)
        h = jnp.einsum("bhwHW,bHWc->bhwc", w.reshape(b, height, width, height, width), v)
        return _skip(x, NIN(c, init_scale=self.init_scale)(h), self.skip_rescale)


class _Resample(nn.Module):
    out_ch: int | None = None
    with_conv: bool = False
    fir: bool = False
    fir_kernel: Sequence[int] = (1, 3, 3, 1)


class Upsample(_Resample):
    """2x upsampling: nearest or FIR, optionally with a (fused) 3x3 convolution."""

    @nn.compact
    def __call__(self, x):
        out_ch = self.out_ch or x.shape[-1]
        if not self.fir:
            h = resample.naive_upsample_2d(x)
            return conv3x3(h, out_ch) if self.with_conv else h
        if not self.with_conv:
            return resample.upsample_2d(x, self.fir_kernel)
        w = self.param("weight", default_init(), (3, 3, x.shape[-1], out_ch))
        b = self.param("bias", nn.initializers.zeros, (out_ch,))
        return resample.upsample_conv_2d(x, w, self.fir_kernel) + b


class Downsample(_Resample):
    """2x downsampling: average pooling / strided convolution, or FIR (fused with a 3x3
    convolution when `with_conv`)."""

    @nn.compact
    def __call__(self, x):
        out_ch = self.out_ch or x.shape[-1]
        if not self.fir:
            if self.with_conv:
                return conv3x3(x, out_ch, stride=2)
            return resample.naive_downsample_2d(x)
        if not self.with_conv:
            return resample.downsample_2d(x, self.fir_kernel)
        w = self.param("weight", default_init(), (3, 3, x.shape[-1], out_ch))
        b = self.param("bias", nn.initializers.zeros, (out_ch,))
        return resample.conv_downsample_2d(x, w, self.fir_kernel) + b


def _time_bias(h, temb, act, features):
    """Adds a per-channel bias computed from the time embedding (if the network has one)."""
    if temb is None:
        return h
    return h + nn.Dense(features, kernel_init=default_init())(act(temb))[:, None, None, :]


class ResnetBlockDDPM(nn.Module):
    """DDPM's residual block: GroupNorm-act-conv, time bias, GroupNorm-act-dropout-conv."""

    act: Callable = nn.swish
    out_ch: int | None = None
    conv_shortcut: bool = False
    dropout: float = 0.1
    skip_rescale: bool = False
    init_scale: float = 0.0
    norm_groups: int = 0

    @nn.compact
    def __call__(self, x, temb=None, train: bool = True):
        out_ch = self.out_ch or x.shape[-1]
        h = conv3x3(self.act(group_norm(x, self.norm_groups)), out_ch)
        h = _time_bias(h, temb, self.act, out_ch)
        h = self.act(group_norm(h, self.norm_groups))
        h = nn.Dropout(self.dropout)(h, deterministic=not train)
        h = conv3x3(h, out_ch, init_scale=self.init_scale)
        if x.shape[-1] != out_ch:
            x = conv3x3(x, out_ch) if self.conv_shortcut else NIN(out_ch)(x)
        return _skip(x, h, self.skip_rescale)


class ResnetBlockBigGAN(nn.Module):
    """BigGAN's residual block, which also resamples (`up` / `down`) inside the block."""

    act: Callable = nn.swish
    up: bool = False
    down: bool = False
    out_ch: int | None = None
    dropout: float = 0.1
    fir: bool = False
    fir_kernel: Sequence[int] = (1, 3, 3, 1)
    skip_rescale: bool = True
    init_scale: float = 0.0
    norm_groups: int = 0

    @nn.compact
    def __call__(self, x, temb=None, train: bool = True):
        out_ch = self.out_ch or x.shape[-1]
        h = self.act(group_norm(x, self.norm_groups))
        if self.up or self.down:
            if self.fir:
                fn = resample.upsample_2d if self.up else resample.downsample_2d
                resize = functools.partial(fn, k=self.fir_kernel)
            else:
                resize = resample.naive_upsample_2d if self.up else resample.naive_downsample_2d
            h, x = resize(h), resize(x)
        h = conv3x3(h, out_ch)
        h = _time_bias(h, temb, self.act, out_ch)
        h = self.act(group_norm(h, self.norm_groups))
        h = nn.Dropout(self.dropout)(h, deterministic=not train)
        h = conv3x3(h, out_ch, init_scale=self.init_scale)
        if x.shape[-1] != out_ch or self.up or self.down:
            x = conv1x1(x, out_ch)
        return _skip(x, h, self.skip_rescale)
