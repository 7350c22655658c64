"""torch's CPU thread count, from one setting (``num_threads`` in common/configs/base.yaml).

CPU results repeat exactly only at the same thread count on the same CPU (the reductions split
differently), so every bundle workflow applies it first (``initialize``), training records the
count it ran with in ``models/run_settings.json``, and the experiment applies and reports it.
"""

from __future__ import annotations

import logging

import torch

logger = logging.getLogger(__name__)


def apply_num_threads(num_threads: int | None) -> int:
    """Set torch's intra-op thread count to ``num_threads`` (None: leave torch's default, usually
    the number of cores); returns the count now in use, to record.

    Raises:
        ValueError: ``num_threads`` that is neither None nor a positive integer.
    """
    if num_threads is not None:
        if isinstance(num_threads, bool) or not isinstance(num_threads, int) or num_threads < 1:
            raise ValueError(
                f"num_threads must be a positive integer or null (torch's default), got {num_threads!r}"
            )
        torch.set_num_threads(num_threads)
    used = torch.get_num_threads()
    logger.info("torch threads: %d%s", used, "" if num_threads is not None else " (torch's default)")
    return used
