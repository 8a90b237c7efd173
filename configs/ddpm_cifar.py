"""DDPM (Ho et al. 2020) on CIFAR-10 with the discrete objective: score_sde's
`vp/ddpm/cifar10.py`. The noise-prediction loss on 1000 noise levels of the VP SDE,
DDPM's residual blocks (no skip rescaling) and ancestral sampling.

    python launch.py --config=configs/ddpm_cifar.py --mode=train --workdir=runs/ddpm_cifar
"""

from configs.vp_cifar import get_config as vp_config


def get_config():
    config = vp_config()
    config.training.continuous = False
    config.training.reduce_mean = True
    config.sampling.predictor = "ancestral"
    config.sampling.corrector = "none"
    model = config.model
    model.resblock_type = "ddpm"
    model.skip_rescale = False
    model.num_res_blocks = 2
    return config
