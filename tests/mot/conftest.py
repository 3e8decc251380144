"""mot tests run single-threaded.

Their tensors are tiny (widths 8-32, < 30 tokens): on a 2-core machine shared with other jobs, a
second intra-op thread only adds synchronisation stalls, while one thread loses nothing here.
"""

import pytest
import torch


@pytest.fixture(autouse=True)
def _single_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
