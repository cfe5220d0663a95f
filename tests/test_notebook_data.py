"""notebooks/01_data.ipynb runs headless with non-default parameters and writes its report.

Each case executes the notebook with papermill (a fresh kernel, about 15 s) into ``tmp_path``
and checks what it leaves in ``run_dir``: the data report JSON, with counts derived here
independently, and the figure files its parameters call for.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import papermill
import pytest
from PIL import Image

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # the kernel inherits it

NOTEBOOK = Path(__file__).resolve().parents[1] / "notebooks" / "01_data.ipynb"
ALWAYS = ("data_class_distribution", "data_pixel_statistics", "data_duplicates")
IMAGES_ONLY = ("data_samples_per_class", *(f"data_augmentation_stage{stage}" for stage in (1, 2, 3, 4)))


def run_notebook(tmp_path: Path, **parameters) -> Path:
    """Execute the notebook with ``parameters`` and ``run_dir`` in ``tmp_path``; return run_dir."""
    run_dir = tmp_path / "run"
    papermill.execute_notebook(str(NOTEBOOK), str(tmp_path / "executed.ipynb"),
                               parameters={"run_dir": str(run_dir), **parameters},
                               kernel_name="python3", cwd=str(tmp_path), progress_bar=False)
    return run_dir


def smoke_variant(tmp_path: Path, old: str, new: str) -> str:
    """The shipped smoke profile with one line changed, as a YAML file; returns its path."""
    text = (Path(__file__).resolve().parents[1] / "lhc" / "profiles" / "smoke.yaml").read_text()
    assert old in text
    path = tmp_path / "profile.yaml"
    path.write_text(text.replace(old, new))
    return str(path)


def figure_stems(run_dir: Path) -> dict[str, set[str]]:
    """Figure name -> the formats written for it."""
    formats: dict[str, set[str]] = {}
    for path in (run_dir / "figures").iterdir():
        formats.setdefault(path.stem, set()).add(path.suffix)
    return formats


def assert_figures(run_dir: Path, expected: tuple[str, ...]) -> None:
    assert figure_stems(run_dir) == {name: {".png", ".svg"} for name in expected}
    for name in expected:
        with Image.open(run_dir / "figures" / f"{name}.png") as png:
            assert png.size[0] > 200 and png.size[1] > 200


@pytest.mark.parametrize("show_images", [True, False])
def test_synthetic_default_with_other_parameters(tmp_path, show_images):
    synthetic_n = 400
    profile = smoke_variant(tmp_path, "  n: 300 ", f"  n: {synthetic_n} ")
    run_dir = run_notebook(tmp_path, profile=profile, seed=3, samples_per_class=3,
                           image_size=64, show_images=show_images)

    # The very file the profile's training reads (lhc.training.runner names it so).
    assert (run_dir / "data" / f"synthetic_n{synthetic_n}_seed0.csv.gz").is_file()
    report = json.loads((run_dir / "data_report.json").read_text())
    rows = {name: split["rows"] for name, split in report["splits"].items()}
    assert sum(rows.values()) == synthetic_n
    # The generator's default usage fractions are 0.8 / 0.1 / 0.1 and it has a PrivateTest part.
    assert rows == {"train": 320, "val": 40, "test": 40}
    assert report["test_is_carved"] is False
    for split in report["splits"].values():
        assert sum(split["class_counts"].values()) == split["rows"]
    assert_figures(run_dir, ALWAYS + IMAGES_ONLY if show_images else ALWAYS)


def test_kaggle_csv_without_private_test_is_carved(tmp_path):
    rng = np.random.default_rng(11)
    per_class_train, num_classes = 4, 7
    train_labels = np.repeat(np.arange(num_classes), per_class_train)  # 28 rows
    val_labels = np.arange(num_classes)  # 7 rows
    images = rng.integers(0, 256, size=(len(train_labels) + len(val_labels), 48 * 48))
    # The last PublicTest image repeats the first Training image (label 0) under label 6:
    # one group across splits, with conflicting labels.
    images[-1] = images[0]
    usages = ["Training"] * len(train_labels) + ["PublicTest"] * len(val_labels)
    lines = ["emotion,pixels,Usage"] + [
        f"{label},{' '.join(map(str, pixels))},{usage}"
        for label, pixels, usage in zip(np.concatenate([train_labels, val_labels]), images, usages,
                                        strict=True)]
    csv_path = tmp_path / "fer2013.csv"
    csv_path.write_text("\n".join(lines) + "\n")

    profile = smoke_variant(tmp_path, "carve_test: null", "carve_test: 0.25")
    run_dir = run_notebook(tmp_path, data_path=str(csv_path), profile=profile, seed=5,
                           show_images=False)

    report = json.loads((run_dir / "data_report.json").read_text())
    assert report["test_is_carved"] is True
    assert "carved" in report["split_convention"]
    # round(0.25 * 4) = 1 row of each class moves from train to test.
    expected_counts = {
        "train": dict.fromkeys(report["class_names"], per_class_train - 1),
        "val": dict.fromkeys(report["class_names"], 1),
        "test": dict.fromkeys(report["class_names"], 1),
    }
    assert {name: split["class_counts"] for name, split in report["splits"].items()} == expected_counts
    assert sum(split["rows"] for split in report["splits"].values()) == len(lines) - 1
    assert report["duplicates"]["groups_across_splits"] == 1
    assert report["duplicates"]["groups_with_conflicting_labels"] == 1
    assert any("PrivateTest" in note for note in report["notes"])
    assert not (run_dir / "data").exists()  # a real source: nothing synthetic is generated
    assert_figures(run_dir, ALWAYS)
