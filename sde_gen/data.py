"""Input pipelines: tfds data sources, scikit-learn digits and toy 2-D data, through grain.

Every data set is a random-access source of records `{"x": ..., "label": ...}` fed to one
grain pipeline: shuffle (seeded), per-record random transforms (flip, uniform
dequantization, each from grain's per-record RNG), batch, split over processes, and
reshape to `(num_devices, batch / num_devices, *shape)` for `pmap`. In a multi-process run every
process reads its own rows of each global batch from the same global stream. The
iterator's state is a small JSON-able dict (`get_state` / `set_state`) that counts global
batches, saved beside the train state for exact resume with any number of processes.

- Images from tfds (`cifar10`, `mnist`, `fashion_mnist`, `celeba`, `lsun_bedroom`,
  `lsun_church`, `imagenet64`: `imagenet_resized/64x64`) through `tfds.data_source(name,
  split, data_dir)`: random access over ArrayRecord files, no TensorFlow needed. Images
  are NHWC. `imagenet64` is also described without its files (its published shape, sizes
  and 1000 classes), so that networks imported for it sample without the data.
- `digits`: scikit-learn's 8x8 digits (17 intensity levels), shipped with the package:
  the embedded default data set, which needs no download.
- Toy 2-D data: `gmm` (a ring of eight Gaussians with known density, see
  `toy_density`), `swiss_roll`, `checkerboard`, generated from a fixed seed; and the binary
  `heartbeat` sequences of Sohl-Dickstein et al. 2015 (length 20, a 1 every 5th bin).

Images are scaled to `[0, 1]`: `k / (L - 1)` for L intensity levels, or with uniform
dequantization `(k + u) / L`, u ~ U(0, 1), so that the L bins of width 1/L tile [0, 1]
(what `bits_per_dim(..., n_bins=L)` assumes). `centered=True` maps to `[-1, 1]`.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable

import grain
import jax
import numpy as np

from ._checks import check_steps, choose
from .analytic import GaussianMixture


@dataclasses.dataclass(frozen=True)
class ImageSource:
    """A tfds image data set: its tfds name, native image key and preprocessing."""

    tfds_name: str
    n_levels: int = 256
    center_crop: int | None = None  # square crop before resizing (CelebA's faces)
    num_classes: int = 0  # classes of its "label" feature; 0: no class labels
    splits: tuple[tuple[str, str], ...] = ()  # sde_gen split -> tfds split, where they differ
    # (shape, {split: examples}) as published, for a set described without its files: the
    # networks imported for it sample from its description alone (see `describe`)
    declared: tuple[tuple[int, ...], tuple[tuple[str, int], ...]] | None = None

    def tfds_split(self, split: str) -> str:
        return dict(self.splits).get(split, split)


IMAGE_DATASETS = {
    "cifar10": ImageSource("cifar10", num_classes=10),
    "mnist": ImageSource("mnist", num_classes=10),
    "fashion_mnist": ImageSource("fashion_mnist", num_classes=10),
    "celeba": ImageSource("celeb_a", center_crop=140),
    "lsun_bedroom": ImageSource("lsun/bedroom"),
    "lsun_church": ImageSource("lsun/church_outdoor"),
    # ImageNet downsampled to 64x64 (Chrabaszcz et al. 2017; guided-diffusion's 64x64 set)
    "imagenet64": ImageSource(
        "imagenet_resized/64x64",
        num_classes=1000,
        splits=(("test", "validation"),),
        declared=((64, 64, 3), (("train", 1_281_167), ("test", 50_000))),
    ),
}
TOY_DATASETS = ("gmm", "swiss_roll", "checkerboard", "heartbeat")
DATASETS = (*IMAGE_DATASETS, "digits", *TOY_DATASETS)
SPLITS = ("train", "test")
# Sizes of the generated toy splits and the fixed seeds they are drawn with.
_TOY_SIZES = {"train": 100_000, "test": 10_000}
_TOY_SEEDS = {"train": 0, "test": 1}
DIGITS_LEVELS = 17
HEARTBEAT_LENGTH, HEARTBEAT_PERIOD = 20, 5


@dataclasses.dataclass(frozen=True)
class DataInfo:
    """What a model and an evaluator need to know about a pipeline's output."""

    name: str
    shape: tuple[int, ...]  # one example
    n_levels: int | None  # intensity levels of discrete data; None for continuous toy data
    data_range: tuple[float, float] | None  # the interval the (dequantized) values tile
    num_examples: int
    num_classes: int = 0  # classes of the "label" field; 0: the data set has no labels


def num_classes(name: str) -> int:
    """How many classes the data set's labels take (0: it has no labels)."""
    choose("data set", name, dict.fromkeys(DATASETS))
    if name == "digits":
        return 10
    return IMAGE_DATASETS[name].num_classes if name in IMAGE_DATASETS else 0


def toy_density():
    """The `gmm` toy data's exact density: eight Gaussians on a circle of radius 2."""
    angles = 2 * math.pi * np.arange(8) / 8
    means = 2.0 * np.stack([np.cos(angles), np.sin(angles)], axis=1)
    return GaussianMixture(means, variances=0.02)


def exact_density(name: str):
    """The exact density of a toy data set where it is known (`gmm`), else None."""
    return toy_density() if name == "gmm" else None


def _toy_points(name: str, n: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    if name == "heartbeat":
        # Sohl-Dickstein et al. 2015's binary sequences: length 20, a 1 every 5th bin,
        # starting at a random phase
        phase = rng.integers(0, HEARTBEAT_PERIOD, n)
        bins = np.arange(HEARTBEAT_LENGTH)
        return ((bins[None] - phase[:, None]) % HEARTBEAT_PERIOD == 0).astype(np.float32)
    if name == "gmm":
        density = toy_density()
        return np.asarray(density.sample(jax.random.key(seed), n), np.float32)
    if name == "swiss_roll":
        # The 2-D swiss roll of Sohl-Dickstein et al. 2015, scaled to unit-order spread.
        t = 1.5 * np.pi * (1 + 2 * rng.random(n))
        points = np.stack([t * np.cos(t), t * np.sin(t)], axis=1) / 5.0
        return (points + 0.05 * rng.standard_normal((n, 2))).astype(np.float32)
    # checkerboard: uniform on the black squares of a 4x4 board on [-2, 2]^2.
    x1 = 4 * rng.random(n) - 2
    x2 = rng.random(n) - rng.integers(0, 2, n) * 2.0
    x2 = x2 + (np.floor(x1) % 2)
    return np.stack([x1, x2], axis=1).astype(np.float32)


def _digits(split: str) -> tuple[np.ndarray, np.ndarray]:
    from sklearn.datasets import load_digits

    digits = load_digits()
    order = np.random.default_rng(0).permutation(len(digits.images))
    cut = 1500  # 1500 train, 297 test, a fixed random split
    index = order[:cut] if split == "train" else order[cut:]
    images = digits.images[index].astype(np.uint8)[..., None]  # (N, 8, 8, 1), values 0..16
    return images, digits.target[index].astype(np.int64)


class _ArraySource(grain.sources.RandomAccessDataSource):
    """Records `{"x", "label"}` from in-memory arrays."""

    def __init__(self, x: np.ndarray, label: np.ndarray | None = None):
        self._x = x
        self._label = np.zeros(len(x), np.int64) if label is None else label

    def __len__(self) -> int:
        return len(self._x)

    def __getitem__(self, index):
        return {"x": self._x[index], "label": self._label[index]}


class _TfdsImages:
    """A tfds data source viewed as records `{"x": uint8 HWC, "label"}`."""

    def __init__(self, source):
        self._source = source

    def __len__(self) -> int:
        return len(self._source)

    def __getitem__(self, index):
        record = self._source[index]
        return {"x": record["image"], "label": np.asarray(record.get("label", 0), np.int64)}


class DataNotPreparedError(FileNotFoundError):
    """A tfds data set that is not prepared in its `data_dir` (nothing is downloaded)."""


def _open_tfds(spec: ImageSource, split: str, data_dir: str | None):
    import tensorflow_datasets as tfds

    try:
        return tfds.data_source(
            spec.tfds_name, split=spec.tfds_split(split), data_dir=data_dir, download=False
        )
    except Exception as err:  # tfds raises several types for a missing or unprepared set
        raise DataNotPreparedError(
            f"tfds data set {spec.tfds_name!r} (split {split!r}) is not prepared in "
            f"data.data_dir={data_dir!r}: prepare it with `tfds build {spec.tfds_name} "
            f"--data_dir=DIR` on a machine with internet, then set config.data.data_dir=DIR "
            f"({type(err).__name__})"
        ) from None


def _open(name: str, split: str, data_dir: str | None):
    """`(source, n_levels, crop)`: the records of a split, their intensity levels (None for
    continuous data) and the square crop taken before resizing."""
    if name in IMAGE_DATASETS:
        spec = IMAGE_DATASETS[name]
        return _TfdsImages(_open_tfds(spec, split, data_dir)), spec.n_levels, spec.center_crop
    if name == "digits":
        return _ArraySource(*_digits(split)), DIGITS_LEVELS, None
    return _ArraySource(_toy_points(name, _TOY_SIZES[split], _TOY_SEEDS[split])), None, None


def _info(name, source, n_levels, shape, centered) -> DataInfo:
    if n_levels is None:
        data_range = None
    else:
        data_range = (-1.0, 1.0) if centered else (0.0, 1.0)
    return DataInfo(name, tuple(shape), n_levels, data_range, len(source), num_classes(name))


def describe(
    name: str,
    split: str = "train",
    *,
    data_dir: str | None = None,
    image_size: int | None = None,
    centered: bool = True,
) -> DataInfo:
    """What `get_dataset` would yield (shape after resizing, levels, size, classes), from one
    record; `DataNotPreparedError` for a tfds set that is not prepared, except one with a
    published description (`imagenet64`), which is described from it: a network imported
    for it samples without the data, and whatever reads the data stops at `get_dataset`."""
    choose("data set", name, dict.fromkeys(DATASETS))
    choose("split", split, dict.fromkeys(SPLITS))
    try:
        source, n_levels, crop = _open(name, split, data_dir)
    except DataNotPreparedError:
        spec = IMAGE_DATASETS[name]
        if spec.declared is None or image_size not in (None, spec.declared[0][0]):
            raise
        shape, sizes = spec.declared
        data_range = (-1.0, 1.0) if centered else (0.0, 1.0)
        examples = dict(sizes)[split]
        return DataInfo(name, shape, spec.n_levels, data_range, examples, spec.num_classes)
    shape = np.shape(source[0]["x"])
    if n_levels is not None and name in IMAGE_DATASETS:
        size = image_size or (crop or shape[0])
        shape = (size, size, shape[-1])
    return _info(name, source, n_levels, shape, centered)


def load_arrays(
    name: str, split: str, limit: int | None = None, *, seed: int = 0, **options
) -> tuple[np.ndarray, np.ndarray, DataInfo]:
    """A whole split (or its first `limit` examples), in order, as `(x, labels, info)`
    arrays after the pipeline's transforms (`options` as for `get_dataset`; labels are 0
    for data without classes). `seed` draws the dequantization noise."""
    info = describe(name, split, data_dir=options.get("data_dir"))
    n = info.num_examples if limit is None else min(limit, info.num_examples)
    batch = math.gcd(n, 256) or 1
    it, info = get_dataset(
        name, split, batch, shuffle=False, num_epochs=1, num_devices=1, seed=seed,
        split_over_processes=False, **options,
    )  # fmt: skip
    xs, ys, count = [], [], 0
    for b in it:
        xs.append(b["x"][0])
        ys.append(b["label"][0] if "label" in b else np.zeros(len(b["x"][0]), np.int64))
        count += len(xs[-1])
        if count >= n:
            break
    return np.concatenate(xs)[:n], np.concatenate(ys)[:n], info


def _resize(image: np.ndarray, size: int, crop: int | None) -> np.ndarray:
    from PIL import Image

    if crop is not None:
        h, w = image.shape[:2]
        top, left = (h - crop) // 2, (w - crop) // 2
        image = image[top : top + crop, left : left + crop]
    if image.shape[0] == size and image.shape[1] == size:
        return image
    squeeze = image.shape[-1] == 1
    pil = Image.fromarray(image[..., 0] if squeeze else image)
    out = np.asarray(pil.resize((size, size), Image.Resampling.BICUBIC))
    return out[..., None] if squeeze else out


def _image_transform(
    n_levels: int,
    image_size: int | None,
    crop: int | None,
    random_flip: bool,
    dequantize: bool,
    centered: bool,
) -> Callable:
    def transform(record, rng: np.random.Generator):
        image = np.asarray(record["x"])
        if image_size is not None or crop is not None:
            image = _resize(image, image_size or image.shape[0], crop)
        if random_flip and rng.random() < 0.5:
            image = image[:, ::-1]
        image = image.astype(np.float32)
        if dequantize:
            image = (image + rng.random(image.shape, dtype=np.float32)) / n_levels
        else:
            image = image / (n_levels - 1)
        if centered:
            image = 2.0 * image - 1.0
        return {"x": image, "label": record["label"]}

    return transform


def get_dataset(
    name: str,
    split: str,
    batch_size: int,
    *,
    seed: int = 0,
    data_dir: str | None = None,
    image_size: int | None = None,
    random_flip: bool = False,
    dequantize: bool = False,
    centered: bool = True,
    num_epochs: int | None = None,
    shuffle: bool = True,
    num_devices: int | None = None,
    num_threads: int = 2,
    prefetch: int = 2,
    split_over_processes: bool = True,
) -> tuple[grain.DatasetIterator, DataInfo]:
    """A batched, device-sharded iterator over a data set, and what it yields.

    Args:
        name: one of `DATASETS`.
        split: "train" or "test".
        batch_size: the global batch over all devices of all processes (each process
            yields its `batch_size / processes` rows of it).
        seed: shuffling and random transforms; the same seed gives the same stream.
        data_dir: where tfds data sets are prepared (ignored for digits and toy data).
        image_size: resize images to this square size (CelebA is center-cropped first).
        random_flip: horizontal flips (training only, as in score_sde).
        dequantize: uniform dequantization (for likelihood training and evaluation).
        centered: scale to [-1, 1] instead of [0, 1] (images only).
        num_epochs: repeat this many times; None repeats forever.
        shuffle: shuffle each epoch.
        num_devices: local devices to shard over (default: all local devices).
        num_threads: threads reading and transforming records.
        prefetch: batches prepared ahead of the consumer.
        split_over_processes: in a multi-process run, each process yields its rows of
            each batch (False: every process yields whole batches).

    Returns:
        `(iterator, info)`; each batch is `{"x": (devices, per_device, *shape), "label": ...}`.
    """
    choose("data set", name, dict.fromkeys(DATASETS))
    choose("split", split, dict.fromkeys(SPLITS))
    batch_size = check_steps("batch_size", batch_size)
    num_devices = jax.local_device_count() if num_devices is None else num_devices
    num_devices = check_steps("num_devices", num_devices)
    processes = jax.process_count() if split_over_processes else 1
    shards = num_devices * processes
    if batch_size % shards:
        raise ValueError(
            f"batch_size {batch_size} must be divisible by the number of devices "
            f"({num_devices} local x {processes} processes = {shards})"
        )
    if num_epochs is not None:
        num_epochs = check_steps("num_epochs", num_epochs)

    source, n_levels, crop = _open(name, split, data_dir)
    if len(source) < batch_size:
        raise ValueError(
            f"data set {name!r} split {split!r} has {len(source)} examples, fewer than "
            f"batch_size {batch_size}"
        )

    # One global stream, the same in every process: shuffled and transformed by global
    # position, so the stream (and the state that resumes it) does not depend on how
    # many processes read it. Process p reads rows [p b, (p + 1) b) of every global batch
    # (b = batch_size / processes), so its local devices hold their slice of the batch
    # in global device order, and an epoch is seen exactly once across processes.
    ds = grain.MapDataset.source(source)
    if shuffle:
        ds = ds.shuffle(seed=seed)
    ds = ds.repeat(num_epochs)
    shape = tuple(np.shape(source[0]["x"]))
    if n_levels is not None:
        transform = _image_transform(n_levels, image_size, crop, random_flip, dequantize, centered)
        ds = ds.random_map(transform, seed=seed + 1)
        shape = transform(source[0], np.random.default_rng(0))["x"].shape
    ds = ds.batch(batch_size // processes, drop_remainder=True)
    if processes > 1:
        global_batches = len(ds) // processes  # whole global batches only
        ds = ds[jax.process_index() : global_batches * processes : processes]
    ds = ds.map(lambda batch: _shard(batch, num_devices))

    info = _info(name, source, n_levels, shape, centered)
    read = grain.ReadOptions(
        num_threads=check_steps("num_threads", num_threads),
        prefetch_buffer_size=check_steps("prefetch", prefetch),
    )
    return iter(ds.to_iter_dataset(read)), info


def _shard(batch: dict, num_devices: int) -> dict:
    return {
        k: v.reshape(num_devices, v.shape[0] // num_devices, *v.shape[1:]) for k, v in batch.items()
    }
