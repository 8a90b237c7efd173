"""A 2015 Gaussian diffusion chain on the embedded 8x8 digits (64 dimensions, T = 200,
linear betas), reverse means and diagonal covariances learned by an MLP.

    python launch.py --config=configs/dpm2015_digits.py --mode=train --workdir=runs/dpm_digits
    python launch.py --config=configs/dpm2015_digits.py --mode=eval --workdir=runs/dpm_digits
    python launch.py --config=configs/dpm2015_digits.py --mode=sample --workdir=runs/dpm_digits

Eval reports K (the continuous data scaled to [-1, 1]) and the samples' classifier FID;
sample mode also inpaints the test digits' right halves by multiplying every reverse step
with a factor fixing the left halves (`eval/sample_<step>_dpm2015/inpainting.png`).
"""

from configs.default_cifar import get_default_configs
from configs.dpm2015_swissroll import dpm2015_defaults


def get_config():
    config = get_default_configs()
    dpm2015_defaults(config, "digits", 64)
    training = config.training
    training.batch_size = 128
    training.n_iters = 6000
    training.snapshot_freq = 2000
    training.log_freq = 250
    training.snapshot_samples = 64
    config.data.image_size = 8
    config.data.num_channels = 1
    model = config.model
    model.num_steps = 200
    model.schedule = "linear"
    model.beta_1 = 1e-4
    model.beta_T = 0.1
    model.learn_betas = False
    model.hidden = 512
    model.num_layers = 4
    model.embed_dim = 128
    config.eval.num_samples = 1000
    return config
