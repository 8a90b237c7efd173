"""A noise-conditional classifier `p_t(y | x_t)` for the digits score model
(Dhariwal & Nichol 2021): the small ADM encoder with attention pooling, trained on digits
noised by the same VP SDE as `configs/vp_digits.py`, at t ~ U(eps, 1).

    python launch.py --config=configs/classifier_digits.py --mode=train --workdir=runs/clf
    python launch.py --config=configs/classifier_digits.py --mode=eval --workdir=runs/clf

Eval reports the test accuracy against t (`eval/report_<step>_classifier.json` and a plot).
Guide the unconditional digits model with it:

    python launch.py --config=configs/vp_digits.py --mode=eval --workdir=runs/digits \\
        --config.sampling.classifier_workdir=runs/clf --config.sampling.classifier_scale=2
"""

from configs.vp_digits import get_config as get_score_config


def get_config():
    config = get_score_config()  # the same SDE, data and time input as the score model
    training = config.training
    training.n_iters = 1500
    training.snapshot_freq = 750
    training.snapshot_freq_for_preemption = 250
    training.snapshot_sampling = False  # a classifier has nothing to sample

    model = config.model
    for key in list(model.keys()):  # drop the DDPM++ options
        if key not in ("ema_rate", "ema_warmup", "beta_min", "beta_max", "beta_schedule",
                       "sigma_min", "sigma_max", "num_scales", "output", "time_input",
                       "time_scale"):  # fmt: skip
            del model[key]
    model.name = "adm_classifier"
    model.num_classes = 10
    model.nf = 32
    model.ch_mult = (1, 2)
    model.num_res_blocks = 1
    model.attn_resolutions = (4,)
    model.head_channels = 32
    model.dropout = 0.0

    config.optim.optimizer = "AdamW"
    config.optim.weight_decay = 0.05
    config.optim.lr = 1e-3
    config.optim.warmup = 100
    return config
