"""A residual MLP on 2-D toy data (default: the ring of eight Gaussians, whose exact
density is `sde_gen.data.toy_density()`), VP SDE. About a minute on a CPU.

    python launch.py --config=configs/toy_2d.py --mode=train --workdir=runs/toy_2d
    python launch.py --config=configs/toy_2d.py --config.data.dataset=swiss_roll ...
"""

from configs.default_cifar import get_default_configs


def get_config():
    config = get_default_configs()
    training = config.training
    training.sde = "vpsde"
    training.batch_size = 512
    training.n_iters = 3000
    training.snapshot_freq = 1000
    training.snapshot_freq_for_preemption = 500
    training.max_to_keep = 3
    training.log_freq = 250
    training.snapshot_samples = 2000
    training.reduce_mean = True

    config.sampling.method = "ode"  # adaptive Tsit5 on the probability-flow ODE

    data = config.data
    data.dataset = "gmm"  # gmm | swiss_roll | checkerboard
    data.random_flip = False
    data.centered = True

    model = config.model
    model.name = "mlp"
    model.hidden = 128
    model.num_layers = 3
    model.embed_dim = 64
    model.ema_rate = 0.999
    model.ema_warmup = True
    model.output = "noise"
    model.time_input = "t"
    del model["dropout"]

    evaluate = config.eval
    evaluate.batch_size = 1000
    evaluate.num_samples = 4000
    evaluate.enable_bpd = True  # exact metrics against the known density for gmm
    evaluate.bpd_num_examples = 2000
    evaluate.bpd_batch_size = 1000

    config.optim.lr = 2e-3
    config.optim.warmup = 100
    config.seed = 0
    return config
