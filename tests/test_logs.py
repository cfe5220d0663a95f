"""lhc.logs: the library's progress lines on stdout, once, wherever stdout points."""

from __future__ import annotations

import io
import logging
import sys

from lhc.logs import LOGGER_NAME, show


def test_show_prints_plain_lines_to_the_current_stdout_once(monkeypatch):
    logger = logging.getLogger(LOGGER_NAME)
    saved = (list(logger.handlers), logger.level, logger.propagate)
    try:
        for handler in list(logger.handlers):
            logger.removeHandler(handler)
        first = show()
        assert show() is first and logger.handlers == [first]  # idempotent
        replaced = io.StringIO()
        monkeypatch.setattr(sys, "stdout", replaced)  # as a kernel or pytest replaces it
        logging.getLogger("lhc.training.runner").info("stage1 resnet34v2: %s", "already done")
        logging.getLogger("lhc.training.runner").debug("not shown at INFO")
        assert replaced.getvalue() == "stage1 resnet34v2: already done\n"
        closed = io.StringIO()
        monkeypatch.setattr(sys, "stdout", closed)
        replaced.close()  # the stream of the previous record may be gone
        logging.getLogger("lhc.training.stage").warning("left out")
        assert closed.getvalue() == "left out\n"
        assert logging.getLogger("other").handlers == []
    finally:
        for handler in list(logger.handlers):
            logger.removeHandler(handler)
        for handler in saved[0]:
            logger.addHandler(handler)
        logger.setLevel(saved[1])
        logger.propagate = saved[2]
