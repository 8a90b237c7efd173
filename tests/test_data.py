"""Input pipelines on mocked tfds sources, the embedded digits and the toy data."""

import jax
import numpy as np
import pytest
import tensorflow_datasets as tfds
from oracles import assert_mixture_samples

from sde_gen import data


@pytest.fixture
def mock_tfds():
    with tfds.testing.mock_data(num_examples=64, policy=tfds.testing.MockPolicy.USE_CODE):
        yield


def take(iterator, n):
    return [next(iterator) for _ in range(n)]


@pytest.mark.parametrize("name, shape", [("cifar10", (32, 32, 3)), ("mnist", (28, 28, 1))])
def test_tfds_pipeline_batches_are_sharded_over_devices(mock_tfds, name, shape):
    it, info = data.get_dataset(name, "train", 16, seed=0)
    batch = next(it)
    devices = jax.local_device_count()
    assert devices == 8  # conftest simulates an 8-device host
    assert batch["x"].shape == (devices, 16 // devices, *shape)
    assert batch["x"].dtype == np.float32 and batch["label"].shape == (devices, 16 // devices)
    assert info.shape == shape and info.n_levels == 256 and info.data_range == (-1.0, 1.0)
    assert info.num_examples == 64


def test_scaling_without_dequantization_hits_the_levels(mock_tfds):
    """k / 255 mapped to [-1, 1]: every value is on the 256-level grid, both ends reachable."""
    it, _ = data.get_dataset("cifar10", "train", 64, seed=0, shuffle=False)
    x = next(it)["x"]
    levels = (x + 1) / 2 * 255
    np.testing.assert_allclose(levels, np.round(levels), atol=1e-4)
    assert x.min() >= -1.0 and x.max() <= 1.0


def test_dequantized_values_stay_in_their_bins(mock_tfds):
    """(k + u) / 256: the same records, with each value inside bin k of width 1/256."""
    plain, _ = data.get_dataset("cifar10", "train", 64, shuffle=False, centered=False)
    deq, info = data.get_dataset(
        "cifar10", "train", 64, shuffle=False, centered=False, dequantize=True
    )
    k = np.round(next(plain)["x"] * 255)
    u = next(deq)["x"] * 256 - k
    assert info.data_range == (0.0, 1.0)
    # u < 1 before float32 rounding; (k + u) / 256 may round onto the bin's upper edge.
    assert u.min() >= 0.0 and u.max() <= 1.0
    assert abs(float(u.mean()) - 0.5) < 0.01  # uniform noise, 196k values


def test_random_flip_mirrors_some_images(mock_tfds):
    plain, _ = data.get_dataset("cifar10", "train", 64, shuffle=False)
    flipped, _ = data.get_dataset("cifar10", "train", 64, shuffle=False, random_flip=True)
    a, b = next(plain)["x"].reshape(64, 32, 32, 3), next(flipped)["x"].reshape(64, 32, 32, 3)
    same = np.all(a == b, axis=(1, 2, 3))
    mirrored = np.all(a[:, :, ::-1] == b, axis=(1, 2, 3))
    assert np.all(same | mirrored) and 10 < mirrored.sum() < 54


def test_resize_for_larger_data_sets(mock_tfds):
    it, info = data.get_dataset("celeba", "train", 8, image_size=64)
    assert next(it)["x"].shape == (8, 1, 64, 64, 3) and info.shape == (64, 64, 3)


def test_resume_from_iterator_state_repeats_the_stream(mock_tfds):
    """Exact resume: a fresh iterator set to a saved state yields what the old one would."""
    it, _ = data.get_dataset("cifar10", "train", 16, seed=3, random_flip=True, dequantize=True)
    take(it, 5)  # crosses an epoch boundary (64 examples = 4 batches)
    state = it.get_state()
    expected = take(it, 3)
    fresh, _ = data.get_dataset("cifar10", "train", 16, seed=3, random_flip=True, dequantize=True)
    fresh.set_state(state)
    for want, got in zip(expected, take(fresh, 3)):
        np.testing.assert_array_equal(want["x"], got["x"])
        np.testing.assert_array_equal(want["label"], got["label"])


def test_seeds_change_the_order_and_repeat_it(mock_tfds):
    first = [data.get_dataset("cifar10", "train", 16, seed=seed)[0] for seed in (0, 0, 1)]
    x0, x0_again, x1 = (next(it)["x"] for it in first)
    np.testing.assert_array_equal(x0, x0_again)
    assert not np.array_equal(x0, x1)


def test_digits_are_the_embedded_default():
    it, info = data.get_dataset("digits", "train", 64, seed=0, dequantize=True)
    batch = next(it)
    assert batch["x"].shape == (8, 8, 8, 8, 1)
    assert info.n_levels == 17 and info.num_examples == 1500 and info.shape == (8, 8, 1)
    x = (batch["x"] + 1) / 2 * 17  # back to level units: k + u
    assert x.min() >= 0 and x.max() <= 17
    _, test_info = data.get_dataset("digits", "test", 64)
    assert test_info.num_examples == 297


def test_toy_gmm_data_follow_the_known_density():
    it, info = data.get_dataset("gmm", "train", 20_000, seed=0)
    x = next(it)["x"].reshape(-1, 2)
    assert info.shape == (2,) and info.n_levels is None and info.data_range is None
    assert_mixture_samples(x, data.toy_density())


@pytest.mark.parametrize("name", ["swiss_roll", "checkerboard"])
def test_other_toy_data_are_two_dimensional_and_bounded(name):
    it, info = data.get_dataset(name, "test", 1000)
    x = next(it)["x"].reshape(-1, 2)
    assert info.num_examples == 10_000 and np.all(np.abs(x) < 3.5)
    assert x.std(axis=0).min() > 0.3


def test_checkerboard_occupies_alternate_squares():
    it, _ = data.get_dataset("checkerboard", "train", 10_000)
    x = next(it)["x"].reshape(-1, 2)
    parity = (np.floor(x[:, 0]) + np.floor(x[:, 1])) % 2
    assert np.all(parity == parity[0])


@pytest.mark.parametrize(
    "kwargs, error, message",
    [
        (dict(name="cifar100"), ValueError, "unknown data set 'cifar100'; choose one of cifar10"),
        (dict(split="valid"), ValueError, "unknown split 'valid'; choose one of train, test"),
        (
            dict(batch_size=12),
            ValueError,
            "batch_size 12 must be divisible by the number of devices",
        ),
        (dict(batch_size=0), ValueError, "batch_size must be a positive int"),
        (dict(batch_size=4096), ValueError, "fewer than batch_size 4096"),
    ],
)
def test_bad_data_arguments_raise(kwargs, error, message):
    args = dict(name="digits", split="train", batch_size=16) | kwargs
    with pytest.raises(error, match=message):
        data.get_dataset(**args)


def test_missing_tfds_data_names_the_data_dir(tmp_path):
    with pytest.raises(FileNotFoundError, match="data_dir="):
        data.get_dataset("cifar10", "train", 16, data_dir=str(tmp_path))
