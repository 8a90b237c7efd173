"""The embedded default made class-conditional: the digits DDPM++ with a class embedding
and a null class, trained with 10% of the labels dropped, so that one network gives both
`p_t(x | y)` and `p_t(x)` (classifier-free guidance, Ho & Salimans 2021).

    python launch.py --config=configs/vp_digits_cond.py --mode=train --workdir=runs/digits_cond

Snapshots show one row per class. `--mode=eval` draws balanced classes and adds the
domain classifier's accuracy on the intended classes to FID/KID and precision/recall;
`--config.sampling.cfg_weight=W` samples with guidance weight W.
"""

from configs.vp_digits import get_config as get_unconditional


def get_config():
    config = get_unconditional()
    config.model.num_classes = 10
    config.model.null_class = True
    config.training.label_dropout = 0.1
    config.training.snapshot_samples = 80  # a row of 8 per class
    return config
