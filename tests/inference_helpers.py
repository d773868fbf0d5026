"""Shared fixture of the inference tests."""

import pytest
import torch


@pytest.fixture(scope="module", autouse=True)
def one_torch_thread():
    """Run a test module with one intra-op thread, then restore the previous setting.

    On a 2-core machine that also runs other work, two OpenMP threads stall on each other's
    barriers: small ops became 30-80x slower. One thread keeps these tests fast and their timing
    stable; the code under test is the same.
    """
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
