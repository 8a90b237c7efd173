"""Diffusion probabilistic models (Sohl-Dickstein, Weiss, Maheswaranathan & Ganguli 2015).

- `chains`: the discrete forward chains (`AbstractChain`, `GaussianChain`,
  `BinomialChain`), their schedules, the bound K and ancestral sampling;
- `kernels`: the exact reverse kernels and bounds of Gaussian and Bernoulli data;
- `conditioning`: factors multiplied into each reverse step (`inpaint_factor`,
  `gaussian_factor`), all of the one shape `condition(key, kernel, t) -> kernel`;
- `net`: `ReverseMLP`, the learned reverse chain, and `reverse_fn`;
- `objective`: `loss`, the `-K` bits-per-dimension training objective.
"""

from .chains import (
    LOG_2PI_E,
    AbstractChain,
    BinomialChain,
    Condition,
    GaussianChain,
    Kernel,
    Reverse,
    linear_betas,
    sohl_dickstein_betas,
)
from .conditioning import condition_kernel, gaussian_factor, inpaint_factor
from .kernels import exact_bound, exact_bound_binary, exact_reverse, exact_reverse_binary
from .net import CHAINS, ReverseMLP, reverse_fn
from .objective import loss

__all__ = [
    "CHAINS",
    "LOG_2PI_E",
    "AbstractChain",
    "BinomialChain",
    "Condition",
    "GaussianChain",
    "Kernel",
    "Reverse",
    "ReverseMLP",
    "condition_kernel",
    "exact_bound",
    "exact_bound_binary",
    "exact_reverse",
    "exact_reverse_binary",
    "gaussian_factor",
    "inpaint_factor",
    "linear_betas",
    "loss",
    "reverse_fn",
    "sohl_dickstein_betas",
]
