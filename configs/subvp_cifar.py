"""DDPM++ cont. (sub-VP) on CIFAR-10: score_sde's `subvp/cifar10_ddpmpp_continuous.py`.

python launch.py --config=configs/subvp_cifar.py --mode=train --workdir=runs/subvp_cifar
"""

from configs.vp_cifar import get_config as vp_config


def get_config():
    config = vp_config()
    config.training.sde = "subvpsde"
    return config
