"""guided-diffusion's released noise-conditional ImageNet 64x64 classifier
(`64x64_classifier.pt`), for `--mode=import`; it guides the model of
`configs/adm_imagenet64.py` (same cosine table of 1000 steps, same data) through
`sampling.classifier_workdir` / `sampling.classifier_scale`. The network is that of the
README's flags `--image_size 64 --classifier_depth 4` with guided-diffusion's classifier
defaults (`--classifier_width 128 --classifier_attention_resolutions 32,16,8
--classifier_use_scale_shift_norm True --classifier_resblock_updown True
--classifier_pool attention`; `sde_gen.interop.adm.adm_classifier_model(**flags)`).

    python launch.py --mode=import --config=configs/adm_classifier_imagenet64.py \
        --workdir=runs/adm64_clf --config.interop.checkpoint=64x64_classifier.pt
"""

from configs.adm_imagenet64 import adm_imagenet64_sde
from configs.default_cifar import get_default_configs


def get_config():
    config = adm_imagenet64_sde(get_default_configs())
    config.training.snapshot_sampling = False  # a classifier has nothing to sample
    model = config.model
    model.name = "adm_classifier"
    model.nf = 128  # --classifier_width 128
    model.num_res_blocks = 4  # --classifier_depth 4
    model.new_attention_order = False
    model.dropout = 0.0
    config.training.batch_size = 64
    config.interop.format = "adm"
    return config
