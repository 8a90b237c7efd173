"""ADM's noise-conditional classifier for CIFAR-10 at 32x32, on the VP SDE of
`configs/vp_cifar.py` (same beta schedule and time input): the U-Net encoder (128
channels, ch_mult (1, 2, 2, 2), two residual blocks per level, attention at 16 and 8 with
64 channels per head) with attention pooling, AdamW (weight decay 0.05) as in
Dhariwal & Nichol 2021, random flips.

    python launch.py --config=configs/classifier_cifar.py --mode=train --workdir=runs/clf_cifar
"""

from configs.default_cifar import get_default_configs


def get_config():
    config = get_default_configs()
    training = config.training
    training.sde = "vpsde"
    training.batch_size = 256
    training.n_iters = 300_000
    training.snapshot_sampling = False

    config.data.centered = True
    model = config.model
    model.name = "adm_classifier"
    model.num_classes = 10
    model.nf = 128
    model.ch_mult = (1, 2, 2, 2)
    model.num_res_blocks = 2
    model.attn_resolutions = (16, 8)
    model.head_channels = 64
    model.dropout = 0.0
    model.ema_rate = 0.9999

    optim = config.optim
    optim.optimizer = "AdamW"
    optim.weight_decay = 0.05
    optim.lr = 3e-4
    optim.warmup = 1000
    return config
