"""Where the workbench's progress lines go: the ``lhc`` logger, shown on stdout on request.

Library code logs to ``logging.getLogger(__name__)`` (children of ``lhc``) and configures
nothing. The ``lhc`` command and the notebooks call :func:`show`, so a run's progress lines
reach the terminal, or the notebook's output, as plain lines without a logging prefix.
"""

from __future__ import annotations

import logging
import sys

__all__ = ["LOGGER_NAME", "show"]

LOGGER_NAME = "lhc"


class _CurrentStdout(logging.Handler):
    """Writes to whatever ``sys.stdout`` is at each record.

    Jupyter kernels and pytest's capture replace ``sys.stdout``; a ``StreamHandler`` would keep
    the stream it started with, and fail once that is closed.
    """

    def emit(self, record: logging.LogRecord) -> None:
        try:
            sys.stdout.write(self.format(record) + "\n")
            sys.stdout.flush()
        except Exception:  # logging's contract: a failing handler never raises
            self.handleError(record)


def show(level: int = logging.INFO) -> logging.Handler:
    """Print ``lhc``'s log records of ``level`` and above on stdout, one plain line each.

    Calling it again changes the level and adds no second handler.

    Returns:
        The handler, for a caller that wants to remove it.
    """
    logger = logging.getLogger(LOGGER_NAME)
    logger.setLevel(level)
    for handler in logger.handlers:
        if isinstance(handler, _CurrentStdout):
            return handler
    handler = _CurrentStdout()
    handler.setFormatter(logging.Formatter("%(message)s"))
    logger.addHandler(handler)
    # Our lines are shown here; a root handler someone configured would print them twice.
    logger.propagate = False
    return handler
