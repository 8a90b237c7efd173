"""Maximum-likelihood training of DDPM++ cont. (VP) on CIFAR-10 (Song, Durkan, Murray &
Ermon 2021): likelihood weighting g(t)^2 with importance sampling of t, uniformly
dequantized data, as in score_flow's `cifar10_ddpmpp_continuous` likelihood configs.

    python launch.py --config=configs/vp_cifar_ml.py --mode=train --workdir=runs/vp_cifar_ml
"""

from configs.vp_cifar import get_config as vp_config


def get_config():
    config = vp_config()
    config.training.likelihood_weighting = True
    config.training.importance_sampling = True
    config.data.uniform_dequantization = True
    config.eval.enable_bpd = True
    return config
