"""Send every log record (and Python warning) of a block of code to a file instead of the console.

The experiment runs each bundle workflow inside :func:`logs_to_file`, so MONAI's and ignite's
per-iteration INFO lines go to ``<run folder>/log.txt`` and the console keeps only the progress.
"""

from __future__ import annotations

import logging
import sys
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

FORMAT = "%(asctime)s - %(name)s - %(levelname)s - %(message)s"


# MONAI loggers made on first use by ``monai.apps.get_logger`` (own stdout handler, no propagation):
# made here first, so that they exist when the block starts and are redirected with the others
MONAI_LAZY_LOGGERS = ("monai.handlers.StatsHandler",)


def _console_loggers() -> list[logging.Logger]:
    """Loggers that do not propagate and write to the console themselves (MONAI's ``get_logger``)."""
    import monai.bundle  # noqa: F401  (its modules make their console loggers when imported)
    from monai.apps import get_logger

    for name in MONAI_LAZY_LOGGERS:
        get_logger(name)
    loggers = [logging.getLogger(name) for name in list(logging.root.manager.loggerDict)]
    return [
        logger
        for logger in loggers
        if isinstance(logger, logging.Logger)
        and not logger.propagate
        and any(_is_console(h) for h in logger.handlers)
    ]


def _is_console(handler: logging.Handler) -> bool:
    return isinstance(handler, logging.StreamHandler) and getattr(handler, "stream", None) in (
        sys.stdout, sys.stderr, sys.__stdout__, sys.__stderr__,
    )  # fmt: skip


@contextmanager
def logs_to_file(path: str | Path, mode: str = "a", level: int = logging.INFO) -> Iterator[Path]:
    """Within the block, log records of ``level`` and above and warnings go to ``path`` only.

    The root logger's handlers and level, the console handlers of non-propagating loggers and
    the warnings capture are restored on exit, also when the block raises.

    Args:
        path: the log file (its folder is created).
        mode: "a" to append, "w" to start the file anew.
        level: the root logger's level within the block.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    handler = logging.FileHandler(path, mode=mode, encoding="utf-8")
    handler.setFormatter(logging.Formatter(FORMAT))
    root = logging.getLogger()
    saved_root = (root.handlers[:], root.level)
    saved_console = {logger: logger.handlers[:] for logger in _console_loggers()}
    root.handlers[:] = [handler]
    root.setLevel(level)
    for logger, handlers in saved_console.items():
        logger.handlers[:] = [h for h in handlers if not _is_console(h)] + [handler]
    logging.captureWarnings(True)
    try:
        yield path
    finally:
        logging.captureWarnings(False)
        for logger, handlers in saved_console.items():
            logger.handlers[:] = handlers
        root.handlers[:], level_before = saved_root
        root.setLevel(level_before)
        handler.close()
