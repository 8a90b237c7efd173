"""The learned reverse chain of a 2015 diffusion probabilistic model (Sohl-Dickstein et al.).

`ReverseMLP` maps `x_t` (flattened to `(B, dim)`) and the step t to the parameters of
`p(x_{t-1} | x_t)`, and holds the chain's betas (fixed, or learned with `beta_1` fixed):

- Gaussian chain: a mean and a diagonal covariance per step, as in the paper. The mean is
  read from a noise prediction, `mu = (x_t - beta_t / sqrt(1 - abar_t) eps) / sqrt(1 - beta_t)`,
  and the variance interpolates, in log space, between the entropy bounds of the step:
  `Sigma = btilde_t^(1 - v) beta_t^v`, `v = sigmoid(.)` per dimension, so the reverse
  step's entropy always lies within `[H_lower, H_upper]` (`GaussianChain.entropy_bounds`).
- Binomial chain: the probabilities `sigmoid(.)` of `x_{t-1} = 1`.

`reverse_fn(model, variables)` returns the chain and `reverse(x_t, t)` for
`sde_gen.dpm2015`'s `bound` and `sample`.
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from .. import dpm2015
from .._checks import choose
from .mlp import MLP

KINDS = ("gaussian", "binomial")
SCHEDULES = ("linear", "sohl_dickstein")


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
        choose("chain kind", self.kind, dict.fromkeys(KINDS))
        choose("beta schedule", self.schedule, dict.fromkeys(SCHEDULES))
        if self.dim < 1 or self.num_steps < 2:
            raise ValueError(f"need dim >= 1 and num_steps >= 2; got {self.dim}, {self.num_steps}")
        super().__post_init__()

    def schedule_betas(self) -> np.ndarray:
        if self.schedule == "linear":
            return np.asarray(dpm2015.linear_betas(self.num_steps, self.beta_1, self.beta_T))
        return np.asarray(dpm2015.sohl_dickstein_betas(self.num_steps, self.beta_1, self.beta_T))

    def setup(self):
        outputs = 2 * self.dim if self.kind == "gaussian" else self.dim
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


def reverse_fn(model: ReverseMLP, variables):
    """`(chain, reverse)` of a `ReverseMLP` with `variables`."""
    betas = model.apply(variables, method=ReverseMLP.betas)
    if model.kind == "binomial":
        chain = dpm2015.BinomialChain(betas)
        return chain, lambda xt, t: jax.nn.sigmoid(model.apply(variables, xt, t.astype(float)))
    chain = dpm2015.GaussianChain(betas)
    abar = chain.alpha_bar
    beta_all = jnp.concatenate([jnp.zeros((1,)), betas])
    btilde = beta_all[1:] * (1 - abar[:-1]) / (1 - abar[1:])
    btilde = jnp.concatenate([jnp.zeros((1,)), btilde.at[0].set(btilde[1])])  # clip t = 1

    def reverse(xt, t):
        out = model.apply(variables, xt, t.astype(float))
        eps, v = out[:, : model.dim], jax.nn.sigmoid(out[:, model.dim :])
        beta, ab = beta_all[t][:, None], abar[t][:, None]
        mean = (xt - beta / jnp.sqrt(1 - ab) * eps) / jnp.sqrt(1 - beta)
        log_var = v * jnp.log(beta) + (1 - v) * jnp.log(btilde[t][:, None])
        return mean, jnp.exp(log_var)

    return chain, reverse
