"""NCSN++ cont. (VE) on CIFAR-10: score_sde's `ve/cifar10_ncsnpp_continuous.py`.

    python launch.py --config=configs/ve_cifar.py --mode=train --workdir=runs/ve_cifar

The network sees the noise std through Gaussian Fourier features and divides its output
by it (`scale_by_sigma`), so its output is read as the score.
"""

from configs.default_cifar import get_default_configs, score_sde_fid_protocol
from configs.vp_cifar import ddpmpp


def get_config():
    config = get_default_configs()
    config.training.sde = "vesde"
    config.training.continuous = True
    config.sampling.method = "pc"
    config.sampling.predictor = "reverse_diffusion"
    config.sampling.corrector = "langevin"
    model = config.model
    ddpmpp(model)  # the same U-Net, with NCSN++'s choices:
    model.name = "ncsnpp"
    model.fir = True
    model.progressive_input = "residual"
    model.embedding_type = "fourier"
    model.scale_by_sigma = True
    model.output = "score"
    model.time_input = "std"
    model.ema_rate = 0.999
    score_sde_fid_protocol(config.eval)
    return config
