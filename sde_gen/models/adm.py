r"""The ADM U-Net of Dhariwal & Nichol 2021 ("Diffusion models beat GANs"), in Flax linen.

The ablations that helped, all here: residual blocks with Adaptive Group Normalization
`AdaGN(h, e) = (1 + e_s) GroupNorm(h) + e_b`, `(e_s, e_b)` a linear map of the time (plus
class) embedding; multi-head self-attention at several resolutions with 64 channels per
head; BigGAN-style residual blocks for up- and downsampling (nearest / average pooling in
the residual branch and the skip); residual connections rescaled by 1/sqrt(2).

Class conditioning: `num_classes > 0` adds a learned class embedding to the time
embedding; labels are ints in `[0, num_classes)`, and with `null_class=True` the label
`num_classes` means "no class" (the unconditional model of classifier-free guidance).

Called as `model.apply(variables, x, time_labels, train=..., y=class_labels)`; returns an
array shaped like x.
"""

from __future__ import annotations

import math

import flax.linen as nn
import jax
import jax.numpy as jnp
from jaxtyping import Array, Float, Int

from .layers import class_embedding, conv3x3, default_init, group_norm, timestep_embedding


def _rescaled(x, h, rescale: bool):
    return (x + h) / math.sqrt(2.0) if rescale else x + h


def _resample(x, direction: str | None):
    if direction == "up":
        b, h, w, c = x.shape
        return jax.image.resize(x, (b, 2 * h, 2 * w, c), "nearest")
    if direction == "down":
        return nn.avg_pool(x, (2, 2), (2, 2))
    return x


def _time_embedding(time_labels, nf):
    emb = nn.Dense(4 * nf)(timestep_embedding(time_labels, nf))
    return nn.Dense(4 * nf)(nn.silu(emb))


def _blocks(m):
    """Constructors of the residual block and attention with the network's settings."""
    block = lambda ch, resample=None: AdaGNResBlock(ch, resample, m.dropout, m.rescale)
    attend = lambda h: MultiHeadAttention(m.head_channels, m.rescale)(h)
    return block, attend


def _encoder(m, x, emb, train):
    """The U-Net's down path and middle block (shared by ADM and its classifier):
    returns the lowest-resolution features and the skip activations."""
    block, attend = _blocks(m)
    h = conv3x3(x, m.nf)
    skips = [h]
    for level, mult in enumerate(m.ch_mult):
        for _ in range(m.num_res_blocks):
            h = block(m.nf * mult)(h, emb, train)
            if h.shape[1] in m.attn_resolutions:
                h = attend(h)
            skips.append(h)
        if level != len(m.ch_mult) - 1:
            h = block(h.shape[-1], "down")(h, emb, train)
            skips.append(h)
    h = block(h.shape[-1])(h, emb, train)
    h = attend(h)
    return block(h.shape[-1])(h, emb, train), skips


class AdaGNResBlock(nn.Module):
    """Residual block with AdaGN; `resample="up"|"down"` makes it BigGAN's resampling block."""

    out_ch: int
    resample: str | None = None
    dropout: float = 0.0
    rescale: bool = True

    @nn.compact
    def __call__(self, x, emb, train: bool):
        h = nn.silu(group_norm(x))
        h = _resample(h, self.resample)
        x = _resample(x, self.resample)
        h = conv3x3(h, self.out_ch)
        scale, shift = jnp.split(
            nn.Dense(2 * self.out_ch, kernel_init=default_init())(nn.silu(emb)), 2, -1
        )
        h = group_norm(h) * (1 + scale[:, None, None]) + shift[:, None, None]
        h = nn.Dropout(self.dropout, deterministic=not train)(nn.silu(h))
        h = conv3x3(h, self.out_ch, init_scale=0.0)
        if x.shape[-1] != self.out_ch:
            x = nn.Conv(self.out_ch, (1, 1), kernel_init=default_init())(x)
        return _rescaled(x, h, self.rescale)


class MultiHeadAttention(nn.Module):
    """Self-attention over all pixels, `channels // head_channels` heads, residual."""

    head_channels: int = 64
    rescale: bool = True

    @nn.compact
    def __call__(self, x):
        b, height, width, c = x.shape
        heads = max(1, c // self.head_channels)
        qkv = nn.Dense(3 * c, kernel_init=default_init())(group_norm(x))
        q, k, v = (a.reshape(b, height * width, heads, c // heads) for a in jnp.split(qkv, 3, -1))
        w = jax.nn.softmax(jnp.einsum("bqhd,bkhd->bhqk", q, k) / math.sqrt(c // heads), -1)
        h = jnp.einsum("bhqk,bkhd->bqhd", w, v).reshape(b, height, width, c)
        return _rescaled(x, nn.Dense(c, kernel_init=default_init(0.0))(h), self.rescale)


class ADM(nn.Module):
    """The ADM U-Net. `attn_resolutions` are feature-map sizes (e.g. (32, 16, 8))."""

    nf: int = 128
    ch_mult: tuple[int, ...] = (1, 2, 2, 2)
    num_res_blocks: int = 2
    attn_resolutions: tuple[int, ...] = (16, 8)
    head_channels: int = 64
    dropout: float = 0.1
    num_classes: int = 0
    null_class: bool = False
    rescale: bool = True

    @nn.compact
    def __call__(
        self,
        x: Float[Array, "batch H W C"],
        time_labels: Float[Array, " batch"],
        train: bool = False,
        y: Int[Array, " batch"] | None = None,
    ) -> Float[Array, "batch H W C"]:
        emb = _time_embedding(time_labels, self.nf)
        cemb = class_embedding(
            y, x.shape[0], self.num_classes, self.null_class, emb.shape[-1], "ADM"
        )
        if cemb is not None:
            emb = emb + cemb
        h, skips = _encoder(self, x, emb, train)
        block, attend = _blocks(self)
        for level, mult in reversed(list(enumerate(self.ch_mult))):
            for _ in range(self.num_res_blocks + 1):
                h = block(self.nf * mult)(jnp.concatenate([h, skips.pop()], -1), emb, train)
                if h.shape[1] in self.attn_resolutions:
                    h = attend(h)
            if level != 0:
                h = block(h.shape[-1], "up")(h, emb, train)
        assert not skips
        h = nn.silu(group_norm(h))
        return conv3x3(h, x.shape[-1], init_scale=0.0)


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
        q = nn.Dense(c)(tokens[:, :1]).reshape(b, 1, heads, c // heads)
        k, v = (
            a.reshape(b, -1, heads, c // heads) for a in jnp.split(nn.Dense(2 * c)(tokens), 2, -1)
        )
        w = jax.nn.softmax(jnp.einsum("bqhd,bkhd->bhqk", q, k) / math.sqrt(c // heads), -1)
        return jnp.einsum("bhqk,bkhd->bqhd", w, v).reshape(b, c)


class ADMClassifier(nn.Module):
    """The noise-conditional classifier `log p_t(y | x_t)` of Dhariwal & Nichol: the ADM
    encoder (down path and middle block, conditioned on the time) with attention pooling.
    Returns logits `(B, num_classes)`."""

    num_classes: int = 10
    nf: int = 128
    ch_mult: tuple[int, ...] = (1, 2, 2, 2)
    num_res_blocks: int = 2
    attn_resolutions: tuple[int, ...] = (16, 8)
    head_channels: int = 64
    dropout: float = 0.0
    rescale: bool = True

    @nn.compact
    def __call__(
        self, x: Float[Array, "batch H W C"], time_labels: Float[Array, " batch"], train=False
    ) -> Float[Array, "batch classes"]:
        if self.num_classes < 2:
            raise ValueError(f"a classifier needs num_classes >= 2; got {self.num_classes}")
        emb = _time_embedding(time_labels, self.nf)
        h, _ = _encoder(self, x, emb, train)
        h = AttentionPool(self.head_channels)(nn.silu(group_norm(h)))
        return nn.Dense(self.num_classes)(h)
