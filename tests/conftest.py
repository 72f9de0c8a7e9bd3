import os

import pytest
import torch
from hypothesis import HealthCheck, settings

from support import SEED

# The property tests' hypothesis settings (tests/robustness/test_properties.py): 60 examples per
# op and device in the default suite, 1000 in the slow suite.
settings.register_profile("seqops-properties", max_examples=60, deadline=None, derandomize=True,
                          suppress_health_check=[HealthCheck.too_slow])
settings.register_profile("seqops-properties-slow", parent=settings.get_profile("seqops-properties"),
                          max_examples=1000)


def run_slow(config) -> bool:
    return config.getoption("--run-slow") or os.environ.get("SEQOPS_RUN_SLOW") == "1"


def pytest_addoption(parser):
    parser.addoption("--run-slow", action="store_true", default=False,
                     help="also run the tests marked slow (also: SEQOPS_RUN_SLOW=1)")



def pytest_collection_modifyitems(config, items):
    if run_slow(config):
        return
    skip = pytest.mark.skip(reason="slow: run with --run-slow or SEQOPS_RUN_SLOW=1")
    for item in items:
        if "slow" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(autouse=True)
def _seed():
    """Every test draws the same random data on every run; SEQOPS_TEST_SEED varies it."""
    torch.manual_seed(SEED)


@pytest.fixture(autouse=True)
def _cuda_emulator(request):
    """Tests parametrized on the "emu" device (support.DEVICE_TABLE) run every seqops op on the
    CUDA host emulator."""
    if request.node.get_closest_marker("emulated") is None:
        yield
        return
    from support import emulator
    with emulator.emulated():
        yield
