"""Regression checks of the committed notebooks with nbval, on any machine.

The committed notebooks carry the outputs of their default (smoke) run. nbval re-executes
every code cell and compares its fresh output with the committed one, after both went
through ``notebooks/nbval_sanitize.cfg`` (times, addresses and sizes replaced); images are
compared by type only (nbval's default), so each figure must still be drawn. The plugin
``lhc.nbval_plugin`` masks the numbers of cells tagged ``trained-values`` (a smoke run's
trained values differ from machine to machine: ``TRAINED_VALUES_REASON``), so those cells are
compared by their rows, columns and labels; the trained numbers themselves are checked here,
on the fresh run's files, against recomputations and invariants that hold on every machine.

nbval starts every kernel in the notebook's folder, and the notebooks' default ``run_dir``
is relative: the copies run in a temporary folder, in sequence order, so they start from a
fresh ``runs/smoke`` as the committed outputs did, and never touch the working tree. The
kernels do not forward what C++ code writes to file descriptor 2 (TensorFlow's start-up log
lines) into the outputs, as in ``lhc run``.

``make nbval-drift`` runs the whole-sequence check under the numerics another CPU would
give (oneDNN off; one intra-op thread).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import nbformat
import numpy as np
import pytest
from nbformat.v4 import new_code_cell, new_notebook, new_output
from nbval.plugin import get_sanitize_patterns

from lhc.nbval_plugin import TRAINED_TAG, mask_numbers
from lhc.workbench import notebook_sequence

REPO = Path(__file__).resolve().parents[1]
SANITIZER = REPO / "notebooks" / "nbval_sanitize.cfg"
FAST_NOTEBOOK = REPO / "notebooks" / "07_efficiency.ipynb"
# A stable metric line of 07_efficiency: the L1 > G1 threshold of the paper's worked case.
METRIC_LINE = "k = 7/27 = 0.259259"


# Cell tags the committed notebooks may carry: papermill's, nbval's and lhc.nbval_plugin's.
KNOWN_TAGS = {"parameters", "injected-parameters", TRAINED_TAG, "nbval-ignore-output"}


def run_nbval(notebooks: list[Path], workdir: Path, timeout: float,
              stop_first: bool = True) -> subprocess.CompletedProcess:
    """Copy ``notebooks`` into ``workdir/notebooks`` and run pytest --nbval on them, in order.

    The child pytest loads ``lhc.nbval_plugin``, as ``make test`` does for the sequence.
    ``stop_first``: stop at the first failing cell (later cells depend on it).
    """
    folder = workdir / "notebooks"
    folder.mkdir(parents=True)
    copies = []
    for notebook in notebooks:
        copies.append(folder / notebook.name)
        shutil.copyfile(notebook, copies[-1])
    # An IPython profile of its own: the kernels leave fd 2 alone (and read no user config).
    profile = workdir / "ipython" / "profile_default"
    profile.mkdir(parents=True)
    (profile / "ipython_kernel_config.py").write_text("c.IPKernelApp.capture_fd_output = False\n")
    env = {**os.environ, "IPYTHONDIR": str(workdir / "ipython"), "TF_CPP_MIN_LOG_LEVEL": "2"}
    command = [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-p", "lhc.nbval_plugin",
               "-q", *(["-x"] if stop_first else []), "--nbval",
               "--nbval-current-env", "--nbval-sanitize-with", str(SANITIZER),
               "--nbval-cell-timeout", "900", "--rootdir", str(workdir), *map(str, copies)]
    return subprocess.run(command, cwd=workdir, env=env, capture_output=True, text=True,
                          timeout=timeout)


def failure_report(result: subprocess.CompletedProcess) -> str:
    return f"nbval exit {result.returncode}:\n{result.stdout[:8000]}\n{result.stderr[-2000:]}"


def edit_metric_output(source: Path, destination: Path) -> None:
    """Copy ``source`` with one digit of :data:`METRIC_LINE` changed in its committed output."""
    notebook = json.loads(source.read_text())
    edited = 0
    for cell in notebook["cells"]:
        for output in cell.get("outputs", []):
            text = "".join(output.get("text", []))
            if METRIC_LINE in text:
                output["text"] = text.replace(METRIC_LINE, "k = 7/27 = 0.259260")
                edited += 1
    assert edited == 1, f"{source.name}: expected one output with {METRIC_LINE!r}"
    destination.write_text(json.dumps(notebook, indent=1))


def sanitize(text: str) -> str:
    """``text`` as nbval sees it after the committed sanitiser (nbval's own file parser)."""
    for regex, replace in get_sanitize_patterns(SANITIZER.read_text()):
        text = re.sub(regex, replace, text)
    return text


STAGE_ROW = "stage1  resnet34v2          2 max_epochs     1     1.9377   0.2333   0.2667      21\n"
KERAS_LINE = "5/5 - 10s - 2s/step - accuracy: 0.2000 - loss: 1.9377 - val_accuracy: 0.2333\n"
STAGE_DONE = "stage2 resnet34v2: 1 epochs (max_epochs), best epoch 1: test_accuracy 0.2333; 11 s\n"


@pytest.mark.parametrize(("committed", "volatile", "changed"), [
    (STAGE_ROW, STAGE_ROW.replace("      21", "       9"), STAGE_ROW.replace("0.2333", "0.2334")),
    ("lhcc    lhc_netc            1 max_epochs     1   186.9923   0.1000   0.3000      10\n",
     "lhcc    lhc_netc            1 max_epochs     1   186.9923   0.1000   0.3000     118\n",
     "lhcc    lhc_netc            1 max_epochs     1   186.9923   0.1000   0.3333      10\n"),
    (KERAS_LINE, KERAS_LINE.replace("10s - 2s/step", "3s - 619ms/step"),
     KERAS_LINE.replace("loss: 1.9377", "loss: 1.9378")),
    (STAGE_DONE, STAGE_DONE.replace("; 11 s", "; 103 s"), STAGE_DONE.replace("0.2333;", "0.2;")),
    ("<Layer object at 0x7f3a2b1c>", "<Layer object at 0x55d0e1a2f3b0>", "<Other object at 0x7f3a2b1c>"),
    ("report: reports/smoke/report.html (3.6 MiB)", "report: reports/smoke/report.html (12.0 MiB)",
     "report: reports/other/report.html (3.6 MiB)"),
])
def test_sanitizer_ignores_times_and_addresses_but_not_results(committed, volatile, changed):
    assert sanitize(committed) == sanitize(volatile)
    assert sanitize(committed) != sanitize(changed)


def test_changed_metric_output_fails_and_unchanged_passes(tmp_path):
    edited = tmp_path / "edited" / FAST_NOTEBOOK.name
    edited.parent.mkdir()
    edit_metric_output(FAST_NOTEBOOK, edited)

    unchanged = run_nbval([FAST_NOTEBOOK], tmp_path / "unchanged", timeout=300)
    changed = run_nbval([edited], tmp_path / "changed", timeout=300)

    assert unchanged.returncode == 0, failure_report(unchanged)
    assert changed.returncode == 1, failure_report(changed)
    assert "Cell outputs differ" in changed.stdout
    assert "0.259260" in changed.stdout and "0.259259" in changed.stdout
    assert "1 failed" in changed.stdout


@pytest.mark.parametrize(("text", "masked"), [
    ("stage1  resnet34v2   2 max_epochs  1   1.9377   0.2333", "stage1 resnet34v2 # max_epochs # # #"),
    ("lhc1 peak 1.1e+03, -0.06 and .5 at 48x48.", "lhc1 peak #, # and # at 48x48."),
    ("<td>0.200000</td>\n<td>NaN</td>", "<td>#</td> <td>NaN</td>"),
    ("v0.2 0x7f3a 12%", "v0.2 0x7f3a #%"),
])
def test_mask_numbers_replaces_numbers_but_not_names(text, masked):
    assert mask_numbers(text) == masked


def test_committed_notebooks_carry_only_known_tags():
    for notebook in notebook_sequence():
        for index, cell in enumerate(json.loads(notebook.read_text())["cells"]):
            unknown = set(cell["metadata"].get("tags", [])) - KNOWN_TAGS
            assert not unknown, f"{notebook.name} cell {index}: unknown tags {unknown}"


def small_notebook(path: Path, source: str, committed: str, tags: list[str]) -> Path:
    """A one-cell notebook whose committed stdout is ``committed`` (what ``source`` printed once)."""
    cell = new_code_cell(source, metadata={"tags": tags}, execution_count=1,
                         outputs=[new_output("stream", name="stdout", text=committed)])
    nbformat.write(new_notebook(cells=[cell], metadata={"kernelspec": {
        "name": "python3", "display_name": "Python 3", "language": "python"}}), path)
    return path


def test_trained_values_compare_rows_and_labels_not_numbers(tmp_path):
    """Tagged cells pass with other numbers and fail on other words; untagged cells stay exact."""
    source = 'print("stage1 resnet34v2 epochs 2 val acc 0.2333")\nprint("lhc1  |r| 0.912")'
    fresh = "stage1 resnet34v2 epochs 2 val acc 0.2333\nlhc1  |r| 0.912\n"
    cases = {  # name: (committed output, tags, passes)
        "same": (fresh, [TRAINED_TAG], True),
        "other_numbers": ("stage1 resnet34v2 epochs 1 val acc 0.4\nlhc1     |r| 10.5\n",
                          [TRAINED_TAG], True),
        "other_label": (fresh.replace("val acc", "val loss"), [TRAINED_TAG], False),
        "other_module": (fresh.replace("lhc1", "lhc2"), [TRAINED_TAG], False),
        "extra_number": (fresh.replace("0.912", "0.912 0.5"), [TRAINED_TAG], False),
        "untagged_other_number": (fresh.replace("0.2333", "0.2334"), [], False),
    }
    folder = tmp_path / "cases"
    folder.mkdir()
    notebooks = [small_notebook(folder / f"{name}.ipynb", source, committed, tags)
                 for name, (committed, tags, _) in cases.items()]
    result = run_nbval(notebooks, tmp_path / "run", timeout=300, stop_first=False)
    for name, (_, _, passes) in cases.items():
        failed = f"FAILED notebooks/{name}.ipynb::Cell 0" in result.stdout
        assert failed != passes, (f"{name}: expected {'a pass' if passes else 'a failure'}\n"
                                  f"{failure_report(result)}")
    assert "4 failed, 2 passed" in result.stdout, failure_report(result)
    # Each failure is an output comparison, not an execution error. Count in the FAILURES
    # section only: whether the short summary repeats the reason depends on the terminal width.
    failures_section = result.stdout.split("short test summary info")[0]
    assert failures_section.count("Cell outputs differ") == 4, failure_report(result)


def check_trained_values(run_dir: Path) -> None:
    """The fresh smoke run's trained numbers against what holds for them on every machine.

    Its values differ between machines, not their relations: accuracies on N images are
    multiples of 1/N, notebook 04's accuracies equal a recomputation from the saved weights
    (softmax outputs, argmax; flip TTA as the mean of the image's and its mirror's
    probabilities, the paper's section 3.3 with two views), and stage 4's verdict follows
    the acceptance rule from the recorded losses.
    """
    from lhc.training import load_run_data, load_trained_model

    metrics = json.loads((run_dir / "metrics.json").read_text())
    data = load_run_data(run_dir)
    sizes = {"val_accuracy": len(data.splits["val"]), "test_accuracy": len(data.splits["test"])}
    for stage, models in metrics["stages"].items():
        for model, row in models.items():
            for key, size in sizes.items():
                correct = row[key] * size
                assert correct == pytest.approx(round(correct), abs=1e-4), (stage, model, key)

    evaluation = json.loads((run_dir / "evaluation.json").read_text())
    assert evaluation["split"] == "test" and evaluation["input_size"] == 48
    test = data.splits["test"]
    # The smoke profile's input is the data's own 48 x 48: no resize, grey to three channels.
    inputs = np.repeat(test.images[..., None].astype("float32"), 3, axis=-1)  # (N, 48, 48, 3)
    for key, entry in evaluation["models"].items():
        stage, model_name = key.split("/")
        model = load_trained_model(run_dir, stage, model_name)
        plain = np.asarray(model(inputs, training=False), dtype="float64")  # (N, 7)
        mirrored = np.asarray(model(inputs[:, :, ::-1], training=False), dtype="float64")
        flip = (plain + mirrored) / 2
        assert entry["without_tta"]["accuracy"] == pytest.approx(
            np.mean(plain.argmax(1) == test.labels)), key
        assert entry["with_tta"]["accuracy"] == pytest.approx(
            np.mean(flip.argmax(1) == test.labels)), key

    verdict = metrics["acceptance"]
    backbone = metrics["stages"]["stage3"]["resnet34v2"]["train_loss"]
    assert verdict["backbone_train_loss"] == pytest.approx(backbone)
    assert verdict["kept"] == (verdict["final_train_loss"] <= 1.1 * backbone)


@pytest.mark.slow
def test_committed_outputs_match_a_fresh_smoke_run(tmp_path):
    """The whole sequence, in order, against its committed outputs (about 4 minutes here).

    Then the fresh run's trained values, which nbval compared by their labels only.
    """
    result = run_nbval(notebook_sequence(), tmp_path, timeout=1500)
    assert result.returncode == 0, failure_report(result)
    check_trained_values(tmp_path / "notebooks" / "runs" / "smoke")
