"""``lhc summary [--input-size 224] [--batch 2] [--seed 0]``: the models at the paper's settings.

Builds ResNet34v2, LHC-Net and LHC-NetC, prints their parameter table and the LHC block
settings, and runs a forward pass on random input.
"""

from __future__ import annotations

import argparse

__all__ = ["add_cli", "parameter_table"]


def add_cli(subparsers) -> None:
    """Add ``summary`` to the ``lhc`` command's subparsers.

    Args:
        subparsers: what ``argparse.ArgumentParser.add_subparsers`` returned.
    """
    summary = subparsers.add_parser("summary", help="parameter table and a forward pass")
    summary.add_argument("--input-size", type=int, default=224)
    summary.add_argument("--batch", type=int, default=2)
    summary.add_argument("--seed", type=int, default=0)
    summary.set_defaults(func=_cmd_summary)


def parameter_table(input_size: int = 224, num_classes: int = 7) -> list[dict]:
    """The three models' parameter counts, counted from the models.

    Args:
        input_size: side of the square RGB input.
        num_classes: outputs of each model.

    Returns:
        One row per model: ``model`` (its name), ``params``, ``lhc_params``,
        ``lhc_share_percent`` and ``keras_model`` (the built model).
    """
    from lhc.evaluation import parameter_counts
    from lhc.models import build_lhc_net, build_resnet34v2

    shape = (input_size, input_size, 3)
    models = {
        "ResNet34v2": build_resnet34v2(shape, num_classes),
        "LHC-Net": build_lhc_net(shape, num_classes, variant="lhc"),
        "LHC-NetC": build_lhc_net(shape, num_classes, variant="lhcc"),
    }
    rows = []
    for name, model in models.items():
        total, attention = parameter_counts(model)
        rows.append({"model": name, "params": total, "lhc_params": attention,
                     "lhc_share_percent": round(100 * attention / total, 2), "keras_model": model})
    return rows


def _cmd_summary(args: argparse.Namespace) -> int:
    import numpy as np

    from lhc.layers import LHC

    rows = parameter_table(args.input_size)
    print(f"Models at {args.input_size}x{args.input_size}x3, 7 classes")
    print(f"{'model':<12} {'params':>12} {'LHC params':>12} {'LHC share':>10}")
    for row in rows:
        print(f"{row['model']:<12} {row['params']:>12,} {row['lhc_params']:>12,} "
              f"{row['lhc_share_percent']:>9.2f}%")
    lhc_net = rows[1]["keras_model"]
    print("\nLHC blocks (heads n, head dim d, pool p, kernel s, scale g) and their input maps")
    for layer in lhc_net.layers:
        if isinstance(layer, LHC):
            print(f"  {layer.name}: n={layer.num_heads} d={layer.head_dim} p={layer.pool_size} "
                  f"s={layer.kernel_size} g={layer.scale_exponent}  on "
                  f"{layer.height}x{layer.width}x{layer.channels}")
    images = np.random.default_rng(args.seed).uniform(
        0, 255, (args.batch, args.input_size, args.input_size, 3)).astype("float32")
    print(f"\nForward pass on random input {images.shape}:")
    for row in rows:
        probabilities = row["keras_model"].predict(images, verbose=0)
        print(f"  {row['model']:<12} output {probabilities.shape}, rows sum to "
              f"{np.round(probabilities.sum(axis=1), 4).tolist()}")
    return 0
