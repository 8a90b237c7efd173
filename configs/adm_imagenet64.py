"""guided-diffusion's released class-conditional ImageNet 64x64 diffusion model
(`64x64_diffusion.pt`, Dhariwal & Nichol 2021), for `--mode=import` and then
`--mode=sample`. The network is that of the README's flags

    --attention_resolutions 32,16,8 --class_cond True --diffusion_steps 1000 --dropout 0.1
    --image_size 64 --learn_sigma True --noise_schedule cosine --num_channels 192
    --num_head_channels 64 --num_res_blocks 3 --resblock_updown True
    --use_new_attention_order True --use_fp16 True --use_scale_shift_norm True

(`sde_gen.interop.adm.adm_model(**flags)` builds the same network): the cosine table of
1000 steps as `training.sde="vpsde_discrete"`, the step index as the time input, noise
prediction (the learned-variance channels are not used by the score). `imagenet64` needs no
prepared data to import or sample; training or evaluating against the data needs
`imagenet_resized/64x64` prepared in `data.data_dir`.

    python launch.py --mode=import --config=configs/adm_imagenet64.py --workdir=runs/adm64 \
        --config.interop.checkpoint=64x64_diffusion.pt
    python launch.py --mode=import --config=configs/adm_classifier_imagenet64.py \
        --workdir=runs/adm64_clf --config.interop.checkpoint=64x64_classifier.pt
    python launch.py --mode=sample --config=configs/adm_imagenet64.py --workdir=runs/adm64 \
        --config.sampling.classifier_workdir=runs/adm64_clf --config.sampling.classifier_scale=1
"""

from configs.default_cifar import get_default_configs


def adm_imagenet64_sde(config):
    """guided-diffusion's 64x64 diffusion process and data (shared with its classifier)."""
    config.training.sde = "vpsde_discrete"
    config.training.continuous = False
    data = config.data
    data.dataset = "imagenet64"
    data.image_size = 64
    data.num_channels = 3
    data.centered = True
    data.random_flip = False
    model = config.model
    model.num_scales = 1000  # --diffusion_steps 1000
    model.beta_schedule = "cosine"  # --noise_schedule cosine
    model.time_input = "discrete"  # guided-diffusion's integer timesteps n in [0, 999]
    model.output = "noise"
    model.num_classes = 1000  # --class_cond True
    model.nf = 192
    model.ch_mult = (1, 2, 3, 4)  # guided-diffusion's channel_mult for 64x64 images
    model.attn_resolutions = (32, 16, 8)
    model.head_channels = 64  # --num_head_channels 64
    model.num_heads = None
    model.rescale = False  # no 1/sqrt(2) on the residual sum
    model.scale_shift_norm = True
    model.resblock_updown = True
    model.conv_resample = True
    model.norm_groups = 32
    return config


def get_config():
    config = adm_imagenet64_sde(get_default_configs())
    model = config.model
    model.name = "adm"
    model.num_res_blocks = 3
    model.new_attention_order = True
    model.dropout = 0.1
    model.out_channels = 6  # --learn_sigma True: the noise, then the variance channels

    config.training.batch_size = 64
    config.interop.format = "adm"
    sampling = config.sampling
    sampling.method = "pc"
    sampling.predictor = "ancestral"
    sampling.corrector = "none"
    sampling.num_steps = 0  # the table's 1000 steps
    config.eval.batch_size = 64
    return config
