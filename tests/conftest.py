"""Test configuration: run the Triton kernels in the interpreter when there is no CUDA device.

TRITON_INTERPRET must be set before any @triton.jit function is defined, i.e. before lowbit's
GPU kernel modules are imported, so it happens here, at collection time.
"""

from __future__ import annotations

import os

import pytest
from hypothesis import HealthCheck, settings


def _cuda() -> bool:
    try:
        import torch
    except ImportError:
        return False
    return torch.cuda.is_available()


HAS_CUDA = _cuda()
if not HAS_CUDA:
    os.environ.setdefault("TRITON_INTERPRET", "1")

# Numba compiles on first call: no deadlines. "ci" is the default; "long" for deeper runs.
settings.register_profile("ci", deadline=None, max_examples=25, print_blob=True,
                          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
settings.register_profile("long", deadline=None, max_examples=500, print_blob=True,
                          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
settings.load_profile(os.environ.get("LOWBIT_HYPOTHESIS_PROFILE", "ci"))


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if HAS_CUDA:
        return
    skip = pytest.mark.skip(reason="needs a CUDA device (the interpreter tier covers these kernels on CPU)")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    # pytest exits 5 when nothing was collected; make sure no filter silently emptied the run
    if session.testscollected == 0 and exitstatus == 0:
        session.exitstatus = 5


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--fuzz-long", action="store_true", help="fuzz the readers with 100 000+ inputs (default: 5 000+)")


@pytest.fixture(scope="session")
def fuzz_budget(request: pytest.FixtureRequest) -> int:
    """Mutated inputs per reader: >= 5 000 in CI, >= 100 000 with --fuzz-long."""
    return 100_000 if request.config.getoption("--fuzz-long") else 5_000
