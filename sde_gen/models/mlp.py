"""A residual MLP score network for low-dimensional (toy) data."""

from __future__ import annotations

import flax.linen as nn
import jax.numpy as jnp

from .layers import class_embedding, timestep_embedding


class MLP(nn.Module):
    """`(x, label) -> output shaped like x` for flat data: a sinusoidal time embedding added
    into each of `num_layers` residual blocks of width `hidden`.

    The last layer starts at zero, so an untrained network predicts zero noise (score 0).
    """

    hidden: int = 256
    num_layers: int = 3
    embed_dim: int = 128
    out_features: int = 0  # 0: shaped like x; else a (B, out_features) output
    num_classes: int = 0  # > 0: class-conditional, labels as y= (see layers.class_embedding)
    null_class: bool = False

    @nn.compact
    def __call__(self, x, labels, train: bool = False, y=None):
        del train  # no dropout or normalization statistics
        batch = x.shape[0]
        temb = timestep_embedding(labels, self.embed_dim).astype(x.dtype)
        temb = nn.Dense(self.hidden)(nn.silu(nn.Dense(self.hidden)(temb)))
        cemb = class_embedding(y, batch, self.num_classes, self.null_class, self.hidden, "MLP")
        temb = temb if cemb is None else temb + cemb
        h = nn.Dense(self.hidden)(x.reshape(batch, -1))
        for _ in range(self.num_layers):
            residual = nn.Dense(self.hidden)(nn.silu(h + temb))
            h = h + nn.Dense(self.hidden)(nn.silu(residual))
        size = self.out_features or x[0].size
        out = nn.Dense(size, kernel_init=nn.initializers.zeros)(nn.silu(h))
        return out if self.out_features else jnp.reshape(out, x.shape)
