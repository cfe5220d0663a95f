"""What several ``lhc`` subcommands share: the exit status of an interrupt and the model options.

Nothing here imports TensorFlow or Keras: every command module imports this one when the
parser is built.
"""

from __future__ import annotations

import argparse

__all__ = ["EXIT_INTERRUPTED", "add_model_arguments"]

EXIT_INTERRUPTED = 130  # 128 + SIGINT, as shells report a process stopped by Ctrl-C


def add_model_arguments(parser: argparse.ArgumentParser) -> None:
    """Add ``MODEL``, ``--stage`` and ``--model`` (the model to load) to a subcommand's parser.

    ``lhc predict`` and ``lhc export`` take their model the same way, for
    :func:`lhc.export.load_model`.

    Args:
        parser: the subcommand's parser.
    """
    parser.add_argument("model", metavar="MODEL", help="run directory or .keras file")
    parser.add_argument("--stage", default="stage4",
                        help="with a run directory: stage1..stage4 or lhcc (default stage4)")
    parser.add_argument("--model", dest="model_name", default=None,
                        help="with a run directory: resnet34v2, lhc_net or lhc_netc "
                             "(default: the model the stage trains, LHC-Net in stage 4)")
