"""Test setup: simulate a multi-device host before JAX is imported anywhere."""

import os

os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=8")
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
def key():
    return jax.random.key(0)
