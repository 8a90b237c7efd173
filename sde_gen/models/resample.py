"""FIR up- and down-sampling of NHWC images (StyleGAN2's `upfirdn_2d`, as in score_sde).

`upfirdn_2d` zero-stuffs by `up`, pads, convolves each channel with a 2-D FIR filter and
keeps every `down`-th pixel; it is one depthwise `lax.conv_general_dilated` (zero-stuffing
is `lhs_dilation`, cropping is negative padding). The fused `upsample_conv_2d` and
`conv_downsample_2d` apply a learned convolution and the filter with a single padding, as
NCSN++'s FIR resampling layers do.
"""

from __future__ import annotations

from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np


def setup_kernel(k: Sequence[float] | np.ndarray) -> np.ndarray:
    """A normalized 2-D filter from a separable 1-D one (outer product) or a 2-D one."""
    k = np.asarray(k, dtype=np.float32)
    if k.ndim == 1:
        k = np.outer(k, k)
    if k.ndim != 2 or k.shape[0] != k.shape[1]:
        raise ValueError(f"FIR kernel must be 1-D or square 2-D; got shape {k.shape}")
    return k / np.sum(k)


def upfirdn_2d(x: jax.Array, k: np.ndarray, up: int = 1, down: int = 1, pad0=0, pad1=0):
    """Zero-stuff by `up`, pad `(pad0, pad1)` (negative crops), convolve with `k`, decimate
    by `down`; the same padding on both spatial axes."""
    channels = x.shape[-1]
    # A true convolution flips the filter; the depthwise kernel is HWIO with I = 1.
    w = jnp.asarray(k[::-1, ::-1, None, None], x.dtype)
    w = jnp.tile(w, (1, 1, 1, channels))
    # Zero-stuffing leaves up - 1 zeros after the last pixel too.
    padding = [(pad0, pad1 + up - 1)] * 2
    return jax.lax.conv_general_dilated(
        x,
        w,
        window_strides=(down, down),
        padding=padding,
        lhs_dilation=(up, up),
        dimension_numbers=("NHWC", "HWIO", "NHWC"),
        feature_group_count=channels,
    )


def upsample_2d(x: jax.Array, k=(1, 3, 3, 1), factor: int = 2) -> jax.Array:
    """Upsample by `factor` with the FIR filter `k` (gain 1: constant images stay constant
    away from the border). `k = [1] * factor` is nearest-neighbour upsampling."""
    k = setup_kernel(k) * factor**2
    p = k.shape[0] - factor
    return upfirdn_2d(x, k, up=factor, pad0=(p + 1) // 2 + factor - 1, pad1=p // 2)


def downsample_2d(x: jax.Array, k=(1, 3, 3, 1), factor: int = 2) -> jax.Array:
    """Downsample by `factor` with the FIR filter `k`. `k = [1] * factor` is average pooling."""
    k = setup_kernel(k)
    p = k.shape[0] - factor
    return upfirdn_2d(x, k, down=factor, pad0=(p + 1) // 2, pad1=p // 2)


def upsample_conv_2d(x: jax.Array, w: jax.Array, k=(1, 3, 3, 1), factor: int = 2) -> jax.Array:
    """`upsample_2d` fused with a convolution by `w` (HWIO): a strided transposed
    convolution followed by the FIR filter, padded once."""
    conv_h, conv_w, in_ch, out_ch = w.shape
    k = setup_kernel(k) * factor**2
    p = (k.shape[0] - factor) - (conv_w - 1)
    # The transposed convolution wants the kernel flipped with in/out channels swapped.
    w = jnp.transpose(w[::-1, ::-1], (0, 1, 3, 2))
    x = jax.lax.conv_transpose(
        x,
        w,
        strides=(factor, factor),
        padding="VALID",
        transpose_kernel=True,
        dimension_numbers=("NHWC", "HWIO", "NHWC"),
    )
    return upfirdn_2d(x, k, pad0=(p + 1) // 2 + factor - 1, pad1=p // 2 + 1)


def conv_downsample_2d(x: jax.Array, w: jax.Array, k=(1, 3, 3, 1), factor: int = 2) -> jax.Array:
    """A convolution by `w` (HWIO) fused with `downsample_2d`: the FIR filter, then a
    strided convolution, padded once."""
    conv_w = w.shape[1]
    k = setup_kernel(k)
    p = (k.shape[0] - factor) + (conv_w - 1)
    x = upfirdn_2d(x, k, pad0=(p + 1) // 2, pad1=p // 2)
    return jax.lax.conv_general_dilated(
        x, w, (factor, factor), "VALID", dimension_numbers=("NHWC", "HWIO", "NHWC")
    )


def naive_upsample_2d(x: jax.Array, factor: int = 2) -> jax.Array:
    """Nearest-neighbour upsampling."""
    return jnp.repeat(jnp.repeat(x, factor, axis=1), factor, axis=2)


def naive_downsample_2d(x: jax.Array, factor: int = 2) -> jax.Array:
    """Average pooling over `factor x factor` blocks."""
    b, h, w, c = x.shape
    return x.reshape(b, h // factor, factor, w // factor, factor, c).mean(axis=(2, 4))
