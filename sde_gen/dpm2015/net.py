"""The learned reverse chain of a 2015 diffusion probabilistic model (Sohl-Dickstein et al.).

`ReverseMLP` maps `x_t` (flattened to `(B, dim)`) and the step t to raw outputs that the
chain reads as the parameters of `p(x_{t-1} | x_t)`, and holds the chain's betas (fixed,
or learned with `beta_1` fixed). `kind` names the chain (`CHAINS`); the chain decides how
many outputs the network has and how they become a kernel
(`AbstractChain.network_outputs`, `kernel_from_network`):

- Gaussian chain: a mean and a diagonal covariance per step, as in the paper. The mean is
  read from a noise prediction and the variance interpolates, in log space, between the
  entropy bounds of the step, so the reverse step's entropy always lies within
  `[H_lower, H_upper]` (`GaussianChain.kernel_from_network`).
- Binomial chain: the probabilities `sigmoid(.)` of `x_{t-1} = 1`.

`reverse_fn(model, variables)` returns the chain and `reverse(x_t, t)` for its `bound` and
`sample`. This module builds on `sde_gen.models.mlp`; `sde_gen.models` registers
`ReverseMLP` as "dpm2015_mlp" without importing this package at import time, so the
dependency runs one way only (dpm2015 -> models).
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from .._checks import choose
from ..models.mlp import MLP
from .chains import AbstractChain, BinomialChain, GaussianChain, Reverse, linear_betas
from .chains import sohl_dickstein_betas

CHAINS: dict[str, type[AbstractChain]] = {"gaussian": GaussianChain, "binomial": BinomialChain}
SCHEDULES = {"linear": linear_betas, "sohl_dickstein": sohl_dickstein_betas}


class ReverseMLP(nn.Module):
    dim: int = 2
    kind: str = "gaussian"
    num_steps: int = 40
    beta_1: float = 1e-4
    beta_T: float = 0.1
    schedule: str = "linear"
    learn_betas: bool = False
    hidden: int = 128
    num_layers: int = 3
    embed_dim: int = 64

    def __post_init__(self):
        choose("chain kind", self.kind, CHAINS)
        choose("beta schedule", self.schedule, SCHEDULES)
        if self.dim < 1 or self.num_steps < 2:
            raise ValueError(f"need dim >= 1 and num_steps >= 2; got {self.dim}, {self.num_steps}")
        super().__post_init__()

    @property
    def chain_type(self) -> type[AbstractChain]:
        """The chain class `kind` names."""
        return CHAINS[self.kind.lower()]

    def schedule_betas(self) -> np.ndarray:
        make = SCHEDULES[self.schedule.lower()]
        return np.asarray(make(self.num_steps, self.beta_1, self.beta_T))

    def setup(self):
        outputs = self.chain_type.network_outputs(self.dim)
        self.body = MLP(self.hidden, self.num_layers, self.embed_dim, out_features=outputs)
        if self.learn_betas:
            rest = np.clip(self.schedule_betas()[1:], 1e-6, 1 - 1e-6)
            init = jnp.asarray(np.log(rest) - np.log1p(-rest), jnp.float32)
            self.beta_logits = self.param("beta_logits", lambda key: init)

    def betas(self) -> jax.Array:
        """`(T,)`: beta_1 fixed, the others from the learned logits (or the schedule)."""
        fixed = jnp.asarray(self.schedule_betas(), jnp.float32)
        if not self.learn_betas:
            return fixed
        return jnp.concatenate([fixed[:1], jax.nn.sigmoid(self.beta_logits)])

    def __call__(self, x, step, train: bool = False):
        return self.body(x.reshape(x.shape[0], -1), step)


def reverse_fn(model: ReverseMLP, variables) -> tuple[AbstractChain, Reverse]:
    """`(chain, reverse)` of a `ReverseMLP` with `variables`."""
    chain = model.chain_type(model.apply(variables, method=ReverseMLP.betas))

    def reverse(xt, t):
        return chain.kernel_from_network(model.apply(variables, xt, t.astype(float)), xt, t)

    return chain, reverse
