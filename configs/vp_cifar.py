"""DDPM++ cont. (VP) on CIFAR-10: score_sde's `vp/cifar10_ddpmpp_continuous.py`.

    python launch.py --config=configs/vp_cifar.py --mode=train --workdir=runs/vp_cifar
    python launch.py --config=configs/vp_cifar.py --mode=eval --workdir=runs/vp_cifar \
      --config.eval.inception_weights=inception_fid.npz \
      --config.eval.reference_stats=cifar10_stats.npz

Needs the tfds `cifar10` data set prepared under `--config.data.data_dir`. The FID follows
score_sde's protocol (50,000 samples against the training set); the two files are
pytorch-fid's Inception weights converted once and score_sde's statistics of the training
set (without `reference_stats`, computed from the data): see docs/interop.md#fid.
"""

from configs.default_cifar import get_default_configs, score_sde_fid_protocol


def ddpmpp(model) -> None:
    """DDPM++ cont.'s network (about 62M parameters)."""
    model.name = "ddpmpp"
    model.scale_by_sigma = False
    model.nonlinearity = "swish"
    model.nf = 128
    model.ch_mult = (1, 2, 2, 2)
    model.num_res_blocks = 4
    model.attn_resolutions = (16,)
    model.resamp_with_conv = True
    model.conditional = True
    model.fir = False
    model.fir_kernel = (1, 3, 3, 1)
    model.skip_rescale = True
    model.resblock_type = "biggan"
    model.progressive = "none"
    model.progressive_input = "none"
    model.progressive_combine = "sum"
    model.init_scale = 0.0
    model.embedding_type = "positional"
    model.fourier_scale = 16.0
    model.output = "noise"
    model.time_input = "t"


def get_config():
    config = get_default_configs()
    config.training.sde = "vpsde"
    config.training.continuous = True
    config.training.reduce_mean = True
    config.sampling.method = "pc"
    config.sampling.predictor = "euler_maruyama"
    config.sampling.corrector = "none"
    config.data.centered = True
    ddpmpp(config.model)
    config.model.ema_rate = 0.9999
    score_sde_fid_protocol(config.eval)
    return config
