"""Maximum-likelihood training on digits (Song, Durkan, Murray & Ermon 2021): the digits
DDPM++ with likelihood weighting g(t)^2, importance sampling of t, and a variational
dequantizer (a small flow, `sde_gen.dequantization.FlowDequantizer`) trained jointly on
the likelihood bound of the discrete digits.

    python launch.py --config=configs/vp_digits_ml.py --mode=train --workdir=runs/digits_ml
    python launch.py --config=configs/vp_digits_ml.py --mode=eval --workdir=runs/digits_ml

The eval report gives bits/dim of the test split under uniform dequantization (`bpd`) and
under the learned one (`vardeq_bpd`, the tighter bound); docs/benchmarks.md has the figures
and the time.
"""

from configs.vp_digits import get_config as digits_config


def get_config():
    config = digits_config()
    training = config.training
    training.likelihood_weighting = True
    training.importance_sampling = True
    training.n_iters = 10000
    training.snapshot_freq = 5000
    training.snapshot_freq_for_preemption = 1000

    config.data.uniform_dequantization = False  # the dequantizer sees the discrete digits
    config.dequantizer.name = "flow"
    config.dequantizer.features = 32
    config.dequantizer.num_couplings = 4

    evaluate = config.eval
    evaluate.enable_sampling = False  # a likelihood run; sample quality: configs/vp_digits.py
    return config
