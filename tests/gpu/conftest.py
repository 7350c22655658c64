"""Skip every test here, with its reason, unless CUDA offers the GPUs its ``gpu`` marker asks for.

``@pytest.mark.gpu`` needs one GPU, ``@pytest.mark.gpu(2)`` two. The check runs before a test's
fixtures (no data is generated for a skipped test) and never at collection, so selecting other
tests leaves CUDA untouched.
"""

from __future__ import annotations

import pytest
import torch


def pytest_runtest_setup(item: pytest.Item) -> None:
    marker = item.get_closest_marker("gpu")
    needed = marker.args[0] if marker is not None and marker.args else 1
    found = torch.cuda.device_count() if torch.cuda.is_available() else 0
    if found == 0:
        pytest.skip("CUDA is not available")
    if found < needed:
        pytest.skip(f"needs {needed} GPUs, found {found}")
