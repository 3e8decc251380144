"""Fixtures shared by the flow tests."""

import pytest
import torch


@pytest.fixture
def one_thread():
    """Run a toy training loop on one thread: its matmuls are tiny, so a second thread only adds
    sync cost, and the other suites share the machine's 2 cores."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
