"""Is the synthetic FER-like data learnable but not trivial? A small CNN, about a minute on CPU.

Generates ``n`` faces (:func:`lhc.data.synthetic.generate`), trains a 3-conv-layer CNN on the
Training rows and reports accuracy on Training, PublicTest and PrivateTest next to chance (1/7)
and the majority-class rate, as JSON. The numbers in :mod:`lhc.data.synthetic`'s docstring come
from this script with its defaults.

Usage: python benchmarks/synthetic_learnability.py [--n 4000] [--seed 0] [--epochs 30]
       [--label-noise 0.0] [--out FILE]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402

from lhc._io import write_json  # noqa: E402
from lhc.data.synthetic import CLASS_NAMES, generate  # noqa: E402


def small_cnn() -> keras.Model:
    inputs = keras.Input((48, 48, 1))
    features = keras.layers.Rescaling(1 / 255)(inputs)
    for filters in (16, 32, 64):
        features = keras.layers.Conv2D(filters, 3, padding="same", activation="relu")(features)
        features = keras.layers.MaxPooling2D()(features)
    features = keras.layers.Flatten()(features)  # (B, 6*6*64)
    features = keras.layers.Dropout(0.3)(features)
    outputs = keras.layers.Dense(len(CLASS_NAMES), activation="softmax")(features)
    return keras.Model(inputs, outputs)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=4000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--label-noise", type=float, default=0.0)
    parser.add_argument("--out", help="also write the JSON here")
    args = parser.parse_args()

    keras.utils.set_random_seed(args.seed)
    start = time.perf_counter()
    data = generate(args.n, args.seed, label_noise=args.label_noise)
    generate_s = time.perf_counter() - start

    def split(usage):
        rows = data.usage == usage
        return data.images[rows][..., None], data.labels[rows]  # (N, 48, 48, 1)

    model = small_cnn()
    model.compile(optimizer=keras.optimizers.Adam(2e-3), loss="sparse_categorical_crossentropy",
                  metrics=["accuracy"])
    train_images, train_labels = split("Training")
    start = time.perf_counter()
    model.fit(train_images, train_labels, batch_size=64, epochs=args.epochs, verbose=0)
    train_s = time.perf_counter() - start

    accuracy = {usage: float(model.evaluate(*split(usage), verbose=0)[1])
                for usage in ("Training", "PublicTest", "PrivateTest")}
    report = {
        "n": args.n, "seed": args.seed, "epochs": args.epochs, "label_noise": args.label_noise,
        "rows": {usage: int((data.usage == usage).sum()) for usage in accuracy},
        "parameters": model.count_params(),
        "accuracy": accuracy,
        "chance": 1 / len(CLASS_NAMES),
        "majority_class_rate": float(np.bincount(train_labels).max() / len(train_labels)),
        "generate_s": round(generate_s, 2), "train_s": round(train_s, 1),
        "machine": f"{platform.machine()}, {os.cpu_count()} CPUs, keras {keras.__version__} "
                   f"({keras.backend.backend()})",
    }
    print(json.dumps(report, indent=2))
    if args.out:
        write_json(args.out, report)


if __name__ == "__main__":
    main()
