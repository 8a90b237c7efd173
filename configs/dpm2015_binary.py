"""Sohl-Dickstein et al. 2015's binary experiment: binomial diffusion on the "heartbeat"
sequences (length 20, a 1 every 5th bin at a random phase), the reverse chain's Bernoulli
probabilities learned by an MLP, the paper's schedule `beta_t = 1 / (T - t + 1)`.

    python launch.py --config=configs/dpm2015_binary.py --mode=train --workdir=runs/binary
    python launch.py --config=configs/dpm2015_binary.py --mode=eval --workdir=runs/binary

Eval reports K in bits per sequence against the data's exact log-likelihood, -log2(5) =
-2.32 bits (the best any model can do), the entropy bounds of each step, and the fraction of
samples that are exact heartbeats.
"""

from configs.default_cifar import get_default_configs
from configs.dpm2015_swissroll import dpm2015_defaults


def get_config():
    config = get_default_configs()
    dpm2015_defaults(config, "heartbeat", 20)
    training = config.training
    training.n_iters = 4000
    training.snapshot_freq = 1000
    training.log_freq = 200
    model = config.model
    model.kind = "binomial"
    model.num_steps = 40
    model.schedule = "sohl_dickstein"
    model.beta_1 = 1e-3
    model.beta_T = 1.0
    model.learn_betas = False
    model.hidden = 256
    return config
