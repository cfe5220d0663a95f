"""``lhc evaluate``: a model's metrics on a data split, with and without TTA.

``lhc evaluate RUN_DIR_OR_MODEL [--data PATH] [--split val|test] [--tta none|flip|paper|reference]
[--out DIR] [--stage S --model M]``: the arguments of :func:`lhc.evaluation.run_evaluation`,
which evaluates and writes ``metrics.json`` (``accuracy`` at its top level: with TTA when
asked) and figures under ``DIR/figures``; this module parses them and prints the headline.

- A run directory gives its model (by default the profile's model of ``--stage``, stage 4),
  its input size, and its data read exactly as training read it; ``--data`` evaluates on
  another source, read with the same settings (e.g. a full FER2013 with its PrivateTest).
- A ``.keras`` file gives its input size from its input shape; ``--data`` is then required.

TensorFlow is imported only when the command runs.
"""

from __future__ import annotations

import argparse

__all__ = ["add_cli"]


def add_cli(subparsers) -> None:
    """Add ``evaluate`` to the ``lhc`` command's subparsers.

    Args:
        subparsers: what ``argparse.ArgumentParser.add_subparsers`` returned.
    """
    # lhc.evaluation imports numpy but not Keras, so every command's parser can be built
    # without Keras.
    from lhc.evaluation import TTA_CHOICES

    parser = subparsers.add_parser(
        "evaluate", help="a model's metrics on a data split, with and without TTA",
        description="Accuracy, loss, per-class precision/recall/F1, confusion matrix and tied "
                    "top scores of a run's model (or a .keras file) on a FER2013 split.")
    parser.add_argument("source", metavar="RUN_DIR_OR_MODEL",
                        help="run directory or .keras model file")
    parser.add_argument("--data", help="FER2013 source (default: the run's own data; "
                                       "required with a .keras file)")
    parser.add_argument("--split", choices=("val", "test"), default="test",
                        help="val (PublicTest) or test (PrivateTest, or carved from train); "
                             "default test")
    parser.add_argument("--tta", choices=TTA_CHOICES, default="none",
                        help="test-time augmentation protocol (lhc.tta); default none")
    parser.add_argument("--out", help="output folder (default <run>/evaluation/<stage>-<model>-"
                                      "<split>-tta_<tta>, or <file stem>-evaluation/...)")
    parser.add_argument("--stage", default="stage4",
                        help="with a run directory: stage1..stage4 or lhcc (default stage4)")
    parser.add_argument("--model", dest="model_name",
                        help="with a run directory: resnet34v2, lhc_net or lhc_netc (default: "
                             "the profile's model of that stage)")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--max-batch", type=int, default=256,
                        help="the most images per model call under TTA")
    parser.set_defaults(func=_cmd_evaluate)


def _cmd_evaluate(args: argparse.Namespace) -> int:
    from lhc.evaluation import run_evaluation

    metrics = run_evaluation(args.source, args.data, split=args.split, tta=args.tta,
                             out=args.out, stage=args.stage, model_name=args.model_name,
                             batch_size=args.batch_size, max_batch=args.max_batch)
    print(f"{metrics['model']['source']} on {metrics['data']['source']} {metrics['split']} "
          f"({metrics['test_split']}, {metrics['without_tta']['num_images']} images, "
          f"{metrics['input_size']}x{metrics['input_size']})")
    for label, part in (("without TTA", metrics["without_tta"]),
                        (f"with TTA ({metrics['tta']['name']}, "
                         f"{len(metrics['tta']['views'])} views)", metrics["with_tta"])):
        if part:
            print(f"  {label}: accuracy {part['accuracy']:.4f}, loss {part['loss']:.4f}, "
                  f"macro F1 {part['macro_f1']:.4f}, tied top scores {part['tied_top_scores']}")
    print(f"metrics and figures in {metrics['out']}")
    return 0
