"""NCSN++ (Song et al. 2021, Sec. H): the U-Net family behind score_sde's best CIFAR-10
results, with every architectural option of score_sde's `ncsnpp.py`.

DDPM++ is the same network with other defaults (`sde_gen.models.DDPMpp`). The network maps
images `(B, H, W, C)` and time labels `(B,)` to an array shaped like the images.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence

import flax.linen as nn
import jax.numpy as jnp

from .._checks import choose
from . import layers

ACTIVATIONS = {
    "swish": nn.swish,
    "relu": nn.relu,
    "elu": nn.elu,
    "lrelu": functools.partial(nn.leaky_relu, negative_slope=0.2),
}
RESBLOCK_TYPES = ("ddpm", "biggan")
PROGRESSIVE = ("none", "output_skip", "residual")
PROGRESSIVE_INPUT = ("none", "input_skip", "residual")
PROGRESSIVE_COMBINE = ("sum", "cat")
EMBEDDINGS = ("fourier", "positional")


class NCSNpp(nn.Module):
    """NCSN++ with score_sde's options; defaults are NCSN++ cont. (VE) on CIFAR-10.

    - `nf`, `ch_mult`, `num_res_blocks`, `attn_resolutions` (spatial sizes that get
      self-attention), `dropout`, `nonlinearity`;
    - `resblock_type`: "ddpm" (separate resampling layers) or "biggan" (resampling inside
      residual blocks); `resamp_with_conv`; `fir` / `fir_kernel`: FIR (anti-aliased)
      resampling instead of nearest / average pooling;
    - `progressive` ("none", "output_skip", "residual"): an output pyramid summed over
      resolutions; `progressive_input` ("none", "input_skip", "residual"): a downsampled
      input pyramid fed to every resolution; `progressive_combine` ("sum", "cat");
    - `embedding_type`: "fourier" (Gaussian Fourier features of `log label`, `fourier_scale`;
      the label must be the noise std: `time_input="std"`) or "positional" (sinusoidal
      features of the label, e.g. 999 t); `conditional`: whether blocks see the time at all;
    - `norm_groups`: the groups of every GroupNorm; 0 is DDPM++'s min(channels / 4, 32),
      score_sde's DDPM network (`models/ddpm.py`) uses 32 at every width;
    - `skip_rescale` (1/sqrt 2 on residual sums), `init_scale` (of each branch's last layer;
      0 starts every block at the identity);
    - `num_classes`: class-conditional with a learned class embedding added to the time
      embedding (labels passed as `y=`; needs `conditional`), `null_class`: one more label,
      `num_classes`, meaning "no class" (for classifier-free guidance);
    - `scale_by_sigma`: divide the output by the label (the std), so an output of unit
      scale is a score; `centered`: inputs already in [-1, 1] (else mapped from [0, 1]).
    """

    nf: int = 128
    ch_mult: Sequence[int] = (1, 2, 2, 2)
    num_res_blocks: int = 4
    attn_resolutions: Sequence[int] = (16,)
    dropout: float = 0.1
    nonlinearity: str = "swish"
    resblock_type: str = "biggan"
    resamp_with_conv: bool = True
    fir: bool = True
    fir_kernel: Sequence[int] = (1, 3, 3, 1)
    progressive: str = "none"
    progressive_input: str = "residual"
    progressive_combine: str = "sum"
    embedding_type: str = "fourier"
    fourier_scale: float = 16.0
    conditional: bool = True
    norm_groups: int = 0
    skip_rescale: bool = True
    init_scale: float = 0.0
    scale_by_sigma: bool = True
    centered: bool = True
    num_classes: int = 0
    null_class: bool = False

    def __post_init__(self):
        choose("nonlinearity", self.nonlinearity, ACTIVATIONS)
        choose("resblock_type", self.resblock_type, dict.fromkeys(RESBLOCK_TYPES))
        choose("progressive", self.progressive, dict.fromkeys(PROGRESSIVE))
        choose("progressive_input", self.progressive_input, dict.fromkeys(PROGRESSIVE_INPUT))
        choose("progressive_combine", self.progressive_combine, dict.fromkeys(PROGRESSIVE_COMBINE))
        choose("embedding_type", self.embedding_type, dict.fromkeys(EMBEDDINGS))
        if self.nf <= 0 or self.nf % 4 or self.num_res_blocks < 1 or not self.ch_mult:
            raise ValueError(
                f"need nf > 0 divisible by 4 (GroupNorm), num_res_blocks >= 1 and a non-empty "
                f"ch_mult; got nf={self.nf}, num_res_blocks={self.num_res_blocks}, "
                f"ch_mult={tuple(self.ch_mult)}"
            )
        if self.norm_groups < 0:
            raise ValueError(
                f"norm_groups must be >= 0 (0: min(channels / 4, 32)); got {self.norm_groups}"
            )
        if self.num_classes < 0 or (self.num_classes and not self.conditional):
            raise ValueError(
                f"num_classes must be >= 0, and class conditioning needs conditional=True; got "
                f"num_classes={self.num_classes}, conditional={self.conditional}"
            )
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"dropout must lie in [0, 1); got {self.dropout}")
        super().__post_init__()

    def _check_input(self, x):
        levels = len(self.ch_mult)
        if x.ndim != 4 or x.shape[1] % 2 ** (levels - 1) or x.shape[2] % 2 ** (levels - 1):
            raise ValueError(
                f"{type(self).__name__} takes images (batch, height, width, channels) whose "
                f"height and width divide by 2^(len(ch_mult) - 1) = {2 ** (levels - 1)}; "
                f"got shape {x.shape}"
            )

    @nn.compact
    def __call__(self, x, labels, train: bool = False, y=None):
        self._check_input(x)
        act = ACTIVATIONS[self.nonlinearity]
        nf, levels, skip_rescale = self.nf, len(self.ch_mult), self.skip_rescale
        # labels at least float32 whatever x's dtype (a bfloat16 label near 999 is rounded
        # to a multiple of 4); the embedding then joins the network in x's dtype
        label_dtype = jnp.promote_types(x.dtype, jnp.float32)
        labels = jnp.broadcast_to(jnp.asarray(labels, label_dtype), (x.shape[0],))

        if self.embedding_type == "fourier":
            temb = layers.GaussianFourierProjection(nf, self.fourier_scale)(jnp.log(labels))
        else:
            temb = layers.timestep_embedding(labels, nf)
        temb = temb.astype(x.dtype)
        if self.conditional:
            temb = nn.Dense(nf * 4, kernel_init=layers.default_init())(temb)
            temb = nn.Dense(nf * 4, kernel_init=layers.default_init())(act(temb))
            cemb = layers.class_embedding(
                y, x.shape[0], self.num_classes, self.null_class, nf * 4, type(self).__name__
            )
            temb = temb if cemb is None else temb + cemb
        elif y is not None:
            raise ValueError(f"class labels y given, but {type(self).__name__} is unconditional")
        else:
            temb = None

        attn = functools.partial(
            layers.AttnBlock,
            init_scale=self.init_scale,
            skip_rescale=skip_rescale,
            norm_groups=self.norm_groups,
        )
        norm = functools.partial(layers.group_norm, groups=self.norm_groups)
        resample = dict(fir=self.fir, fir_kernel=self.fir_kernel)
        resblock = functools.partial(
            layers.ResnetBlockDDPM if self.resblock_type == "ddpm" else layers.ResnetBlockBigGAN,
            act=act,
            dropout=self.dropout,
            init_scale=self.init_scale,
            skip_rescale=skip_rescale,
            norm_groups=self.norm_groups,
            **({} if self.resblock_type == "ddpm" else resample),
        )
        combine = functools.partial(layers.Combine, method=self.progressive_combine)

        if not self.centered:
            x = 2 * x - 1.0

        # Downsampling path.
        input_pyramid = x
        hs = [layers.conv3x3(x, nf)]
        for level in range(levels):
            for _ in range(self.num_res_blocks):
                h = resblock(out_ch=nf * self.ch_mult[level])(hs[-1], temb, train)
                if h.shape[1] in self.attn_resolutions:
                    h = attn()(h)
                hs.append(h)
            if level == levels - 1:
                continue
            if self.resblock_type == "ddpm":
                h = layers.Downsample(with_conv=self.resamp_with_conv, **resample)(hs[-1])
            else:
                h = resblock(down=True)(hs[-1], temb, train)
            if self.progressive_input == "input_skip":
                input_pyramid = layers.Downsample(with_conv=False, **resample)(input_pyramid)
                h = combine()(input_pyramid, h)
            elif self.progressive_input == "residual":
                input_pyramid = layers.Downsample(out_ch=h.shape[-1], with_conv=True, **resample)(
                    input_pyramid
                )
                h = input_pyramid = layers._skip(input_pyramid, h, skip_rescale)
            hs.append(h)

        h = resblock()(hs[-1], temb, train)
        h = attn()(h)
        h = resblock()(h, temb, train)

        # Upsampling path, with an optional output pyramid.
        pyramid = None
        for level in reversed(range(levels)):
            for _ in range(self.num_res_blocks + 1):
                h = jnp.concatenate([h, hs.pop()], axis=-1)
                h = resblock(out_ch=nf * self.ch_mult[level])(h, temb, train)
            if h.shape[1] in self.attn_resolutions:
                h = attn()(h)

            if self.progressive != "none":
                features = x.shape[-1] if self.progressive == "output_skip" else h.shape[-1]
                init = self.init_scale if self.progressive == "output_skip" else 1.0
                if level == levels - 1:
                    pyramid = layers.conv3x3(act(norm(h)), features, init_scale=init)
                elif self.progressive == "output_skip":
                    pyramid = layers.Upsample(with_conv=False, **resample)(pyramid)
                    pyramid = pyramid + layers.conv3x3(act(norm(h)), features, init_scale=init)
                else:
                    pyramid = layers.Upsample(out_ch=h.shape[-1], with_conv=True, **resample)(
                        pyramid
                    )
                    h = pyramid = layers._skip(pyramid, h, skip_rescale)

            if level != 0:
                if self.resblock_type == "ddpm":
                    h = layers.Upsample(with_conv=self.resamp_with_conv, **resample)(h)
                else:
                    h = resblock(up=True)(h, temb, train)

        assert not hs
        if self.progressive == "output_skip":
            h = pyramid
        else:
            h = act(norm(h))
            h = layers.conv3x3(h, x.shape[-1], init_scale=self.init_scale)

        if self.scale_by_sigma:
            h = h / labels.reshape((-1,) + (1,) * (h.ndim - 1))
        return h
