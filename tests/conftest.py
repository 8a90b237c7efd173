"""Test setup: simulate a multi-device host before JAX is imported anywhere."""

import os

# 8 simulated devices; their collectives rendezvous on a shared thread pool, and on 2 busy
# cores (two test workers and the subprocesses some tests start) a participant can be
# late by more than XLA's default 40 s, which aborts the whole process: allow 10 minutes.
os.environ.setdefault(
    "XLA_FLAGS",
    "--xla_force_host_platform_device_count=8 "
    "--xla_cpu_collective_call_terminate_timeout_seconds=600",
)
os.environ.setdefault("JAX_PLATFORMS", "cpu")

import jax  # noqa: E402
import pytest  # noqa: E402

import sde_gen as sg  # noqa: E402

SDES = {
    "vp": sg.VPSDE(),
    "subvp": sg.SubVPSDE(),
    "ve": sg.VESDE(),
}


@pytest.fixture(params=list(SDES), ids=list(SDES))
def sde(request):
    return SDES[request.param]


@pytest.fixture
def mock_cifar():
    """tfds's mock CIFAR-10 (8 examples) for tests that open the data set."""
    import tensorflow_datasets as tfds

    with tfds.testing.mock_data(num_examples=8, policy=tfds.testing.MockPolicy.USE_CODE):
        yield


@pytest.fixture
def key():
    return jax.random.key(0)


# The longest tests start first, so that two workers finish together instead of one
# waiting for a long test picked up last.
LONGEST_FIRST = (
    "test_tiny_digits_run_then_eval",
    "test_the_network_and_the_dequantizer_train_jointly",
    "test_import_mode_writes_a_workdir_with_the_reference_score",
    "test_classifier_guidance_with_converted_networks",
    "test_toy_2d_run_samples_the_mixture_weights",
    "test_tiny_vp_cifar_run_through_the_tfds_pipeline",
    "test_short_runs_improve_k_and_eval_reports_it",
    "test_noise_conditional_classifier_learns_the_bayes_classifier",
    "test_random_weights_forward_save_load_and_torch_conversion",
    "test_pool3_and_logits_equal_pytorch_fids_on_the_same_weights",
    "test_shapes_the_class_embedding_and_its_effect",
    "test_resumed_run_equals_the_uninterrupted_one_bit_for_bit",
)


def pytest_collection_modifyitems(config, items):
    items.sort(key=lambda item: not item.name.startswith(LONGEST_FIRST))
