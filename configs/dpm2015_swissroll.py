"""Sohl-Dickstein et al. 2015's first experiment: a Gaussian diffusion chain of T = 40 steps
on the 2-D swiss roll, the reverse chain's means and diagonal covariances learned by an MLP
and the betas (all but beta_1) learned with them by gradient ascent on the bound K.

    python launch.py --config=configs/dpm2015_swissroll.py --mode=train --workdir=runs/roll
    python launch.py --config=configs/dpm2015_swissroll.py --mode=eval --workdir=runs/roll
    python launch.py --config=configs/dpm2015_swissroll.py --mode=sample --workdir=runs/roll

Eval reports K on the test split (nats and bits), the entropy of each learned reverse step
with its bounds, and the samples' distance to the data (FID, KID, precision and recall in
the data's coordinates); sample mode draws the paper's figure of forward and reverse
trajectories (`eval/sample_<step>_dpm2015/trajectories.png`).
"""

from configs.default_cifar import get_default_configs


def dpm2015_defaults(config, dataset: str, dim: int) -> None:
    """What the 2015 experiments share: the loop's settings, the data and the network."""
    training = config.training
    training.batch_size = 256
    training.snapshot_freq_for_preemption = 500
    training.max_to_keep = 3
    training.snapshot_samples = 1000
    data = config.data
    data.dataset = dataset
    data.random_flip = False
    data.centered = True
    model = config.model
    for key in ("dropout",):
        del model[key]
    model.name = "dpm2015_mlp"
    model.dim = dim
    model.kind = "gaussian"
    model.hidden = 128
    model.num_layers = 3
    model.embed_dim = 64
    model.ema_rate = 0.999
    model.ema_warmup = True
    config.eval.num_samples = 2000
    config.eval.enable_bpd = False
    config.optim.lr = 1e-3
    config.optim.warmup = 100


def get_config():
    config = get_default_configs()
    dpm2015_defaults(config, "swiss_roll", 2)
    training = config.training
    training.n_iters = 4000
    training.snapshot_freq = 1000
    training.log_freq = 200
    model = config.model
    model.num_steps = 40
    model.schedule = "linear"
    model.beta_1 = 1e-4
    model.beta_T = 0.3
    model.learn_betas = True
    return config
