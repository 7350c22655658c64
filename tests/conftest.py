"""Shared fixtures: tiny generated datasets (no real data, nothing downloaded)."""

from __future__ import annotations

import pytest


@pytest.fixture(scope="session")
def tiny_datalist_2d(tmp_path_factory):
    """80 thorax-like 32x32 PNGs with train/teacher/validation/test roles."""
    from data_prep.synthetic2d import generate

    out = tmp_path_factory.mktemp("synthetic2d")
    return generate(
        out, n=80, size=32, seed=0, teacher_size=16, val_fraction=0.2, test_fraction=0.2, progress=False, verbose=False
    )


@pytest.fixture(scope="session")
def tiny_datalist_3d(tmp_path_factory):
    """16 SimBA-like 16^3 NIfTI volumes with train/teacher/validation/test roles."""
    from data_prep.simba3d import generate

    out = tmp_path_factory.mktemp("simba3d")
    return generate(
        out, n=24, size=16, seed=0, teacher_size=4, val_fraction=0.2, test_fraction=0.2, progress=False, verbose=False
    )


@pytest.fixture
def isolated_logging():
    """No logging handler of an earlier test for this one (a MONAI run binds its handler to the
    sys.stdout of that moment, pytest's capture, closed afterwards); the handlers are put back after."""
    import logging

    def loggers():
        return [logging.getLogger(), *(v for v in logging.Logger.manager.loggerDict.values() if isinstance(v, logging.Logger))]

    saved = {logger: (logger.handlers[:], logger.level, logger.disabled) for logger in loggers()}
    for logger in saved:
        logger.handlers[:] = []
    yield
    for logger in loggers():
        logger.handlers[:], logger.level, logger.disabled = saved.get(logger, ([], logging.NOTSET, False))
