"""foresight tests run single-threaded.

The tokenizer tests run many tiny convolutions; on a 2-core machine that other jobs also use, two
intra-op threads make each small conv ~50x slower (measured: 0.3 ms -> 16 ms for an 8-channel
16 x 16 conv under load), while one thread loses nothing at these sizes.
"""

import pytest
import torch


@pytest.fixture(autouse=True)
def _single_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
