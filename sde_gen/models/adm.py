r"""The ADM U-Net of Dhariwal & Nichol 2021 ("Diffusion models beat GANs"), in Flax linen.

The network of guided-diffusion's `unet.py` (`UNetModel`, `EncoderUNetModel` with attention
pooling), option for option: residual blocks with Adaptive Group Normalization
`AdaGN(h, e) = (1 + e_s) GroupNorm(h) + e_b`, `(e_s, e_b)` a linear map of the time (plus
class) embedding (`scale_shift_norm=False`: the embedding is added, `h + e`); multi-head
self-attention at several resolutions, with `head_channels` per head or a fixed
`num_heads`, its fused `qkv` projection split into q, k, v before the heads
(`new_attention_order=True`, guided-diffusion's `QKVAttention`) or per head (False,
`QKVAttentionLegacy`); BigGAN-style residual blocks for up- and downsampling (nearest /
average pooling in the residual branch and the skip; `resblock_updown=False`: a strided
3x3 convolution down, nearest upsampling then a 3x3 convolution up, or pooling alone with
`conv_resample=False`). guided-diffusion's residual connections are plain sums; `rescale`
(on by default, as this network has always been trained here) divides them by sqrt(2),
an ablation the paper did not keep.

The time embedding is guided-diffusion's, `[cos(n w_k), sin(n w_k)]` with
`w_k = 10000^(-k / (nf / 2))`, and its GroupNorms have epsilon 1e-5; `norm_groups=32` is its
`GroupNorm32` at every width (channels must then be multiples of 32), `None` DDPM's
`min(channels / 4, 32)` groups, which is the same from 128 channels on.

Class conditioning: `num_classes > 0` adds a learned class embedding to the time
embedding; labels are ints in `[0, num_classes)`, and with `null_class=True` the label
`num_classes` means "no class" (the unconditional model of classifier-free guidance).

Called as `model.apply(variables, x, time_labels, train=..., y=class_labels)`; returns an
array shaped like x, or with `out_channels` channels (6 for guided-diffusion's learned-sigma
networks on RGB: the noise, then the variance interpolation `v` of Nichol & Dhariwal).
"""

from __future__ import annotations

import math

import flax.linen as nn
import jax
import jax.numpy as jnp
from jaxtyping import Array, Float, Int

from .layers import class_embedding, conv3x3, default_init


def adm_timestep_embedding(
    labels: Float[Array, " batch"], dim: int, max_period: int = 10_000
) -> Float[Array, "batch dim"]:
    """guided-diffusion's sinusoidal embedding: `[cos(n w_k), sin(n w_k)]`,
    `w_k = max_period^(-k / (dim / 2))`, k = 0 .. dim/2 - 1, zero-padded to an odd `dim`."""
    half = dim // 2
    freqs = jnp.exp(-math.log(max_period) * jnp.arange(half, dtype=jnp.float32) / half)
    args = jnp.asarray(labels, jnp.float32)[:, None] * freqs[None, :]
    emb = jnp.concatenate([jnp.cos(args), jnp.sin(args)], axis=1)
    return jnp.pad(emb, ((0, 0), (0, dim % 2)))


def _norm(x, groups: int | None):
    c = x.shape[-1]
    groups = min(c // 4, 32) if groups is None else groups
    if c % groups:
        raise ValueError(
            f"ADM's GroupNorm of {groups} groups needs a multiple of {groups} channels; got {c}"
        )
    return nn.GroupNorm(num_groups=groups, epsilon=1e-5)(x)


def _rescaled(x, h, rescale: bool):
    return (x + h) / math.sqrt(2.0) if rescale else x + h


def _resample(x, direction: str | None):
    if direction == "up":
        b, h, w, c = x.shape
        return jax.image.resize(x, (b, 2 * h, 2 * w, c), "nearest")
    if direction == "down":
        return nn.avg_pool(x, (2, 2), (2, 2))
    return x


def _time_embedding(time_labels, nf, dtype):
    # the sinusoids of the labels in float32, the layers in the network's dtype (`x`'s)
    emb = nn.Dense(4 * nf)(adm_timestep_embedding(time_labels, nf).astype(dtype))
    return nn.Dense(4 * nf)(nn.silu(emb))


def _blocks(m):
    """Constructors of the residual block, the resampling step and attention with the
    network's settings."""

    def block(ch, resample=None):
        return AdaGNResBlock(ch, resample, m.dropout, m.rescale, m.scale_shift_norm, m.norm_groups)

    def resample(h, emb, train, direction):
        if m.resblock_updown:
            return block(h.shape[-1], direction)(h, emb, train)
        return Resample(direction, m.conv_resample)(h)

    def attend(h):
        return MultiHeadAttention(
            m.head_channels, m.rescale, m.num_heads, m.new_attention_order, m.norm_groups
        )(h)

    return block, resample, attend


def _encoder(m, x, emb, train):
    """The U-Net's down path and middle block (shared by ADM and its classifier):
    returns the lowest-resolution features and the skip activations."""
    block, resample, attend = _blocks(m)
    h = conv3x3(x, int(m.nf * m.ch_mult[0]))
    skips = [h]
    for level, mult in enumerate(m.ch_mult):
        for _ in range(m.num_res_blocks):
            h = block(int(m.nf * mult))(h, emb, train)
            if h.shape[1] in m.attn_resolutions:
                h = attend(h)
            skips.append(h)
        if level != len(m.ch_mult) - 1:
            h = resample(h, emb, train, "down")
            skips.append(h)
    h = block(h.shape[-1])(h, emb, train)
    h = attend(h)
    return block(h.shape[-1])(h, emb, train), skips


class AdaGNResBlock(nn.Module):
    """Residual block with AdaGN (or an added embedding, `scale_shift_norm=False`);
    `resample="up"|"down"` makes it BigGAN's resampling block."""

    out_ch: int
    resample: str | None = None
    dropout: float = 0.0
    rescale: bool = True
    scale_shift_norm: bool = True
    norm_groups: int | None = None

    @nn.compact
    def __call__(self, x, emb, train: bool):
        h = nn.silu(_norm(x, self.norm_groups))
        h = _resample(h, self.resample)
        x = _resample(x, self.resample)
        h = conv3x3(h, self.out_ch)
        width = 2 * self.out_ch if self.scale_shift_norm else self.out_ch
        e = nn.Dense(width, kernel_init=default_init())(nn.silu(emb))[:, None, None]
        if self.scale_shift_norm:
            scale, shift = jnp.split(e, 2, -1)
            h = _norm(h, self.norm_groups) * (1 + scale) + shift
        else:
            h = _norm(h + e, self.norm_groups)
        h = nn.Dropout(self.dropout, deterministic=not train)(nn.silu(h))
        h = conv3x3(h, self.out_ch, init_scale=0.0)
        if x.shape[-1] != self.out_ch:
            x = nn.Conv(self.out_ch, (1, 1), kernel_init=default_init())(x)
        return _rescaled(x, h, self.rescale)


class Resample(nn.Module):
    """guided-diffusion's `Downsample` / `Upsample` (`resblock_updown=False`): a 3x3
    convolution of stride 2 (padding 1 on each side), or nearest upsampling then a 3x3
    convolution; average pooling / upsampling alone without `conv`."""

    direction: str
    conv: bool = True

    @nn.compact
    def __call__(self, x):
        c = x.shape[-1]
        if self.direction == "down":
            if not self.conv:
                return _resample(x, "down")
            return nn.Conv(
                c, (3, 3), strides=(2, 2), padding=((1, 1), (1, 1)), kernel_init=default_init()
            )(x)
        x = _resample(x, "up")
        return conv3x3(x, c) if self.conv else x


def _heads(c: int, head_channels: int, num_heads: int | None) -> int:
    return num_heads if num_heads else max(1, c // head_channels)


def _attention(q, k, v, heads):
    """Softmax attention of `(B, L, C)` queries over keys and values, `heads` heads of
    `C / heads` channels (channel `h * C / heads + d` is channel d of head h)."""
    b, c = q.shape[0], q.shape[-1]
    q, k, v = (a.reshape(b, a.shape[1], heads, c // heads) for a in (q, k, v))
    w = jax.nn.softmax(jnp.einsum("bqhd,bkhd->bhqk", q, k) / math.sqrt(c // heads), -1)
    return jnp.einsum("bhqk,bkhd->bqhd", w, v).reshape(b, -1, c)


class MultiHeadAttention(nn.Module):
    """Self-attention over all pixels, `channels // head_channels` heads (or `num_heads`),
    residual. The fused projection's `3C` outputs are `(q, k, v)` each split into heads
    (`new_attention_order`), or per head `(q_h, k_h, v_h)` (guided-diffusion's legacy
    order)."""

    head_channels: int = 64
    rescale: bool = True
    num_heads: int | None = None
    new_attention_order: bool = True
    norm_groups: int | None = None

    @nn.compact
    def __call__(self, x):
        b, height, width, c = x.shape
        heads = _heads(c, self.head_channels, self.num_heads)
        if c % heads:
            raise ValueError(f"{c} channels do not split into {heads} attention heads")
        qkv = nn.Dense(3 * c, kernel_init=default_init())(_norm(x, self.norm_groups))
        qkv = qkv.reshape(b, height * width, 3 * c)
        if not self.new_attention_order:  # (head, q|k|v, d) -> (q|k|v, head, d)
            qkv = qkv.reshape(b, height * width, heads, 3, c // heads).swapaxes(2, 3)
            qkv = qkv.reshape(b, height * width, 3 * c)
        h = _attention(*jnp.split(qkv, 3, -1), heads).reshape(b, height, width, c)
        return _rescaled(x, nn.Dense(c, kernel_init=default_init(0.0))(h), self.rescale)


class ADM(nn.Module):
    """The ADM U-Net. `attn_resolutions` are feature-map sizes (e.g. (32, 16, 8));
    `out_channels` defaults to the input's (2C for a learned-sigma network)."""

    nf: int = 128
    ch_mult: tuple[float, ...] = (1, 2, 2, 2)
    num_res_blocks: int = 2
    attn_resolutions: tuple[int, ...] = (16, 8)
    head_channels: int = 64
    num_heads: int | None = None
    new_attention_order: bool = True
    dropout: float = 0.1
    num_classes: int = 0
    null_class: bool = False
    rescale: bool = True
    scale_shift_norm: bool = True
    resblock_updown: bool = True
    conv_resample: bool = True
    norm_groups: int | None = None
    out_channels: int | None = None

    @nn.compact
    def __call__(
        self,
        x: Float[Array, "batch H W C"],
        time_labels: Float[Array, " batch"],
        train: bool = False,
        y: Int[Array, " batch"] | None = None,
    ) -> Float[Array, "batch H W C_out"]:
        emb = _time_embedding(time_labels, self.nf, x.dtype)
        cemb = class_embedding(
            y, x.shape[0], self.num_classes, self.null_class, emb.shape[-1], "ADM"
        )
        if cemb is not None:
            emb = emb + cemb
        h, skips = _encoder(self, x, emb, train)
        block, resample, attend = _blocks(self)
        for level, mult in reversed(list(enumerate(self.ch_mult))):
            for _ in range(self.num_res_blocks + 1):
                h = jnp.concatenate([h, skips.pop()], -1)
                h = block(int(self.nf * mult))(h, emb, train)
                if h.shape[1] in self.attn_resolutions:
                    h = attend(h)
            if level != 0:
                h = resample(h, emb, train, "up")
        assert not skips
        h = nn.silu(_norm(h, self.norm_groups))
        return conv3x3(h, self.out_channels or x.shape[-1], init_scale=0.0)


class AttentionPool(nn.Module):
    """ADM's attention pooling: the mean token attends to all pixels (with learned
    positional embeddings), `channels // head_channels` heads."""

    head_channels: int = 64

    @nn.compact
    def __call__(self, h):
        b, height, width, c = h.shape
        tokens = h.reshape(b, height * width, c)
        tokens = jnp.concatenate([tokens.mean(1, keepdims=True), tokens], axis=1)
        pos = self.param("pos", nn.initializers.normal(c**-0.5), (height * width + 1, c))
        tokens = tokens + pos
        heads = max(1, c // self.head_channels)
        q = nn.Dense(c)(tokens[:, :1])
        k, v = jnp.split(nn.Dense(2 * c)(tokens), 2, -1)
        return _attention(q, k, v, heads)[:, 0]


class ADMClassifier(nn.Module):
    """The noise-conditional classifier `log p_t(y | x_t)` of Dhariwal & Nichol
    (guided-diffusion's `EncoderUNetModel`, `pool="attention"`): the ADM encoder (down
    path and middle block, conditioned on the time) with attention pooling. Returns
    logits `(B, num_classes)`."""

    num_classes: int = 10
    nf: int = 128
    ch_mult: tuple[float, ...] = (1, 2, 2, 2)
    num_res_blocks: int = 2
    attn_resolutions: tuple[int, ...] = (16, 8)
    head_channels: int = 64
    num_heads: int | None = None
    new_attention_order: bool = True
    dropout: float = 0.0
    rescale: bool = True
    scale_shift_norm: bool = True
    resblock_updown: bool = True
    conv_resample: bool = True
    norm_groups: int | None = None

    @nn.compact
    def __call__(
        self, x: Float[Array, "batch H W C"], time_labels: Float[Array, " batch"], train=False
    ) -> Float[Array, "batch classes"]:
        if self.num_classes < 2:
            raise ValueError(f"a classifier needs num_classes >= 2; got {self.num_classes}")
        emb = _time_embedding(time_labels, self.nf, x.dtype)
        h, _ = _encoder(self, x, emb, train)
        h = AttentionPool(self.head_channels)(nn.silu(_norm(h, self.norm_groups)))
        return nn.Dense(self.num_classes)(h)
