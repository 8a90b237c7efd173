"""NCSN++ cont. (VE) on CIFAR-10: score_sde's `ve/cifar10_ncsnpp_continuous.py`.

    python launch.py --config=configs/ve_cifar.py --mode=train --workdir=runs/ve_cifar

The network sees the noise std through Gaussian Fourier features and divides its output
by it (`scale_by_sigma`), so its output is read as the score.
"""

from configs.default_cifar import get_default_configs


def get_config():
    config = get_default_configs()
    config.training.sde = "vesde"
    config.training.continuous = True
    config.sampling.method = "pc"
    config.sampling.predictor = "reverse_diffusion"
    config.sampling.corrector = "langevin"
    model = config.model
    model.name = "ncsnpp"
    model.scale_by_sigma = True
    model.ema_rate = 0.999
    model.nonlinearity = "swish"
    model.nf = 128
    model.ch_mult = (1, 2, 2, 2)
    model.num_res_blocks = 4
    model.attn_resolutions = (16,)
    model.resamp_with_conv = True
    model.conditional = True
    model.fir = True
    model.fir_kernel = (1, 3, 3, 1)
    model.skip_rescale = True
    model.resblock_type = "biggan"
    model.progressive = "none"
    model.progressive_input = "residual"
    model.progressive_combine = "sum"
    model.init_scale = 0.0
    model.embedding_type = "fourier"
    model.fourier_scale = 16.0
    model.output = "score"
    model.time_input = "std"
    return config
