"""Defaults shared by the CIFAR-10 experiments: score_sde's `default_cifar10_configs.py`
(Song et al. 2021, App. H) with this library's names. Not an experiment by itself: the
experiment files set `training.sde` and the model.
"""

import ml_collections


def get_default_configs() -> ml_collections.ConfigDict:
    config = ml_collections.ConfigDict()

    config.training = training = ml_collections.ConfigDict()
    training.sde = "vpsde"  # vpsde | subvpsde | vesde | vpsde_discrete | vpsde_cosine
    training.batch_size = 128  # global, over all devices
    training.n_iters = 1_300_001
    training.snapshot_freq = 50_000  # kept checkpoints, sample grids, loss curve
    training.snapshot_freq_for_preemption = 10_000  # frequent checkpoint, only the latest kept
    training.max_to_keep = 30  # snapshots kept in checkpoints/
    training.log_freq = 50
    training.snapshot_sampling = True
    training.snapshot_samples = 64
    training.likelihood_weighting = False
    training.importance_sampling = False
    training.continuous = True
    training.reduce_mean = False
    training.eps = 1e-5  # smallest training time
    # class-conditional networks: probability of replacing a label by the null class, which
    # trains the unconditional score of classifier-free guidance (needs model.null_class)
    training.label_dropout = 0.0
    # the networks' forward and backward pass: float32 | bfloat16 (parameters, optimizer
    # state, EMA and the loss stay float32; sampling and evaluation run in float32)
    training.compute_dtype = "float32"

    config.sampling = sampling = ml_collections.ConfigDict()
    sampling.method = "pc"  # pc | ode | sde | fast
    sampling.predictor = "euler_maruyama"  # euler_maruyama | reverse_diffusion | ancestral | none
    sampling.corrector = "none"  # langevin | none
    sampling.n_steps_each = 1
    sampling.noise_removal = True
    sampling.snr = 0.16
    sampling.num_steps = 0  # 0: model.num_scales (method "fast": 20)
    sampling.eps = 1e-3
    sampling.ode_solver = "tsit5"
    sampling.rtol = 1e-5
    sampling.atol = 1e-5
    sampling.sde_solver = "euler"
    # method "fast": a solver of sg.sample_fast, its time grid and steps (num_steps 0: 20);
    # solver fields (e.g. DDIM's eta) go in sampling.fast_options, a dict.
    sampling.fast_solver = "dpm_solver_3m"
    sampling.grid = "logsnr"  # logsnr | uniform | karras | quadratic
    # guidance (samples are drawn for balanced classes): classifier-free guidance weight of
    # a class-conditional network with a null class, and classifier guidance by the
    # noise-conditional classifier trained in classifier_workdir (configs/classifier_*.py)
    sampling.cfg_weight = 0.0
    sampling.classifier_scale = 0.0
    sampling.classifier_workdir = ml_collections.config_dict.placeholder(str)
    # --mode=sample: generate | inpaint | colorize (the first task_examples images of
    # task_split, restored by sampling.impute_method with the PC sampler; PNG before/after)
    sampling.task = "generate"
    sampling.inpaint_mask = "right_half"  # left/right/top/bottom_half | center | random
    sampling.task_split = "test"
    sampling.task_examples = 64
    # how the task imputes (sg.sample_impute's method): replacement (score_sde's) | smc
    # (sequential Monte Carlo, converges to the exact conditional as num_particles grows;
    # takes no corrector) | reconstruction_guidance (replacement plus guidance_weight times
    # the gradient of the reconstruction error of Tweedie's x0)
    sampling.impute_method = "replacement"
    sampling.num_particles = 16  # impute_method "smc": particles per image
    sampling.guidance_weight = 1.0  # impute_method "reconstruction_guidance"

    config.eval = evaluate = ml_collections.ConfigDict()
    evaluate.checkpoint = "latest"  # latest | all | a step number
    evaluate.batch_size = 1024  # samples per sampling batch, over all devices
    evaluate.num_samples = 50_000
    evaluate.enable_sampling = True
    evaluate.features = "auto"  # auto | inception | classifier | data
    evaluate.inception_weights = ml_collections.config_dict.placeholder(str)  # local .npz
    evaluate.classifier_steps = 1500  # training steps of the domain classifier
    evaluate.reference_split = "test"
    evaluate.reference_examples = 10_000
    # a shared .npz of reference statistics (pytorch-fid / clean-fid mu and sigma, score_sde's
    # cifar10_stats.npz pool_3 features), used instead of computing them on reference_split
    evaluate.reference_stats = ml_collections.config_dict.placeholder(str)
    evaluate.enable_bpd = False
    evaluate.bpd_dataset = "test"
    evaluate.bpd_num_examples = 0  # 0: the whole split
    evaluate.bpd_batch_size = 256
    evaluate.bpd_repeats = 1  # dequantization draws per example
    evaluate.divergence = "hutchinson"  # hutchinson | exact
    evaluate.enable_bound = False  # also the per-example likelihood bound (sde_gen.nll_bound)
    evaluate.bound_samples = 16  # Monte Carlo draws of (t, x_t) per example
    evaluate.bpd_rtol = 1e-5
    evaluate.bpd_atol = 1e-5

    config.data = data = ml_collections.ConfigDict()
    data.dataset = "cifar10"
    data.data_dir = ml_collections.config_dict.placeholder(str)  # tfds data_dir
    data.image_size = 32
    data.random_flip = True
    data.centered = False
    data.uniform_dequantization = False
    data.num_channels = 3

    # a learned dequantization of the discrete data, trained with the score network on the
    # likelihood bound (needs likelihood_weighting and data.uniform_dequantization=False)
    config.dequantizer = dequantizer = ml_collections.ConfigDict()
    dequantizer.name = "none"  # none | flow
    dequantizer.features = 64
    dequantizer.num_couplings = 4

    config.model = model = ml_collections.ConfigDict()
    model.name = "ddpmpp"
    model.output = "noise"  # what the network predicts: noise | score | x0
    # the network sees time_scale * t (t), the noise std (std) or, with vpsde_discrete, the
    # table's step index n in [0, num_scales - 1] (discrete)
    model.time_input = "t"
    model.sigma_min = 0.01
    model.sigma_max = 50.0
    model.num_scales = 1000
    model.beta_min = 0.1
    model.beta_max = 20.0
    model.beta_schedule = "linear"  # vpsde_discrete's table: linear (from beta_min/max) | cosine
    model.dropout = 0.1
    model.ema_rate = 0.9999
    model.ema_warmup = False  # True: decay min(ema_rate, (1 + n) / (10 + n)) for short runs

    config.optim = optim = ml_collections.ConfigDict()
    optim.optimizer = "Adam"  # Adam | AdamW
    optim.weight_decay = 0.0
    optim.lr = 2e-4
    optim.beta1 = 0.9
    optim.eps = 1e-8
    optim.warmup = 5000
    optim.grad_clip = 1.0

    # --mode=import: a released score_sde / score_sde_pytorch checkpoint into a workdir
    # (docs/interop.md#score_sde-flax); the network options above must be the checkpoint's
    config.interop = interop = ml_collections.ConfigDict()
    interop.checkpoint = ml_collections.config_dict.placeholder(str)  # checkpoint_<n> or .pth
    interop.format = "auto"  # auto | score_sde | score_sde_pytorch
    interop.use_ema = True  # False: import the raw training weights as the EMA too

    config.seed = 42
    config.distributed = False  # jax.distributed.initialize() for multi-host runs
    return config


def score_sde_fid_protocol(evaluate: ml_collections.ConfigDict) -> None:
    """score_sde's CIFAR-10 FID: 50,000 samples against the 50,000 training images, whose
    pool3 features its `cifar10_stats.npz` holds (`eval.reference_stats=PATH` uses that
    file instead of computing them; see docs/interop.md#fid)."""
    evaluate.num_samples = 50_000
    evaluate.reference_split = "train"
    evaluate.reference_examples = 50_000
