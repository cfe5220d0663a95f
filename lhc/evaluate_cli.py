"""The ``lhc evaluate`` subcommand, added to the ``lhc`` parser by :func:`add_cli`.

``lhc evaluate RUN_DIR_OR_MODEL [--data PATH] [--split val|test] [--tta none|flip|paper|reference]
[--out DIR] [--stage S --model M]``: a model's metrics on a split of any FER2013 source the
readers accept (:mod:`lhc.evaluation`), written as ``metrics.json`` (``accuracy`` at its top
level: with TTA when asked) and figures under ``DIR/figures``.

- A run directory gives its model (by default the profile's model of ``--stage``, stage 4),
  its input size, and its data read exactly as training read it (the profile's carve_test,
  :func:`lhc.training.load_run_data`); ``--data`` evaluates on another source, read with the
  same settings (e.g. a full FER2013 with its PrivateTest).
- A ``.keras`` file gives its input size from its input shape; ``--data`` is then required.

TensorFlow is imported only when the command runs.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

__all__ = ["TTA_CHOICES", "add_cli", "run_evaluation"]

# The named protocols of lhc.tta.PROTOCOLS, listed here so that building the parser does not
# import Keras (a test checks that the two agree).
TTA_CHOICES = ("none", "flip", "paper", "reference")


def add_cli(subparsers) -> None:
    """Add ``evaluate`` to the ``lhc`` command's subparsers.

    Args:
        subparsers: what ``argparse.ArgumentParser.add_subparsers`` returned.
    """
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


def run_evaluation(source: str | Path, data: str | Path | None = None, split: str = "test",
                   tta: str = "none", out: str | Path | None = None, stage: str = "stage4",
                   model_name: str | None = None, batch_size: int = 64,
                   max_batch: int = 256) -> dict[str, Any]:
    """What ``lhc evaluate`` does: evaluate, write ``metrics.json`` and figures.

    Args:
        source: a run directory or a ``.keras`` file.
        data: a FER2013 source; None for a run's own data.
        split: ``"val"`` or ``"test"``.
        tta: a protocol name of :data:`lhc.tta.PROTOCOLS`.
        out: output folder (default in the module docstring).
        stage: with a run directory, the stage whose final model to evaluate.
        model_name: with a run directory, the model; None for the profile's model of ``stage``.
        batch_size: images per batch.
        max_batch: the most images per model call under TTA.

    Returns:
        The content of ``metrics.json``: ``accuracy``, ``loss``, ``split``, ``test_split``,
        ``model``, ``data``, ``input_size``, ``out`` and :func:`lhc.evaluation.evaluate`'s result.

    Raises:
        FileNotFoundError: no such source or data.
        ValueError: a source that is neither, a missing ``--data``, an absent split.
    """
    from lhc import plots
    from lhc._io import write_json
    from lhc.data import load_fer2013
    from lhc.evaluation import (
        confusion_matrix_figure,
        evaluate,
        parameter_counts,
        per_class_figure,
        split_label,
    )
    from lhc.export import load_model

    source = Path(source)
    if not source.exists():
        raise FileNotFoundError(f"{source}: no such run directory or .keras file")
    if source.is_dir():
        from lhc.training import load_run, load_run_data
        from lhc.training.runner import DATA_SEED, STAGE_LABELS

        profile, _ = load_run(source)
        stage = STAGE_LABELS.get(stage, stage)
        if stage not in profile.stages:
            raise ValueError(f"--stage {stage!r}: expected one of {list(STAGE_LABELS)} or "
                             f"{list(profile.stages)}")
        model_name = model_name or profile.stages[stage].model
        dataset = (load_run_data(source) if data is None else
                   load_fer2013(data, carve_test=profile.data.carve_test, seed=DATA_SEED))
        default_out = source / "evaluation" / f"{stage}-{model_name}-{split}-tta_{tta}"
    elif data is None:
        raise ValueError(f"{source}: a model file carries no data; pass --data PATH")
    else:
        dataset = load_fer2013(data)
        default_out = source.parent / f"{source.stem}-evaluation" / f"{split}-tta_{tta}"
    if split not in dataset.splits:
        raise ValueError(f"{dataset.source}: no {split} split (it has "
                         f"{', '.join(dataset.splits)}; {dataset.split_convention}); choose "
                         "--split from those, or a source with PrivateTest")
    loaded = load_model(source, stage=stage, model=model_name or "lhc_net",
                        class_names=dataset.class_names)
    chosen = dataset.splits[split]
    result = evaluate(loaded.model, chosen.images, chosen.labels, loaded.class_names,
                      image_size=loaded.input_size, tta=tta, batch_size=batch_size,
                      max_batch=max_batch)
    total, attention = parameter_counts(loaded.model)
    headline = result["with_tta"] or result["without_tta"]
    metrics = {
        "accuracy": result["accuracy"],
        "loss": headline["loss"],
        "split": split,
        "test_split": split_label(dataset, split),
        "input_size": loaded.input_size,
        "model": {"source": loaded.source, "name": loaded.model.name, "params": total,
                  "lhc_params": attention, "lhc_share": attention / total},
        "data": {"source": dataset.source, "split_convention": dataset.split_convention,
                 "counts": {name: len(part) for name, part in dataset.splits.items()},
                 "test_is_carved": dataset.test_is_carved, "notes": dataset.notes},
        **result,
    }
    out = Path(out) if out else default_out
    metrics["out"] = str(out)
    write_json(out / "metrics.json", metrics)
    title = f"{loaded.source}, {split} ({metrics['test_split']})"
    plots.save_figure(confusion_matrix_figure(result, title), out / "figures" /
                      "evaluate_confusion_matrix")
    plots.save_figure(per_class_figure(result, title), out / "figures" / "evaluate_per_class")
    return metrics


def _cmd_evaluate(args: argparse.Namespace) -> int:
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
