"""Regression checks of the committed notebooks with nbval.

The committed notebooks carry the outputs of their default (smoke) run. nbval re-executes
every code cell and compares its fresh output with the committed one, after both went
through ``notebooks/nbval_sanitize.cfg`` (times, addresses and sizes replaced); images are
compared by type only (nbval's default), so each figure must still be drawn.

nbval starts every kernel in the notebook's folder, and the notebooks' default ``run_dir``
is relative: the copies run in a temporary folder, in sequence order, so they start from a
fresh ``runs/smoke`` as the committed outputs did, and never touch the working tree. The
kernels do not forward what C++ code writes to file descriptor 2 (TensorFlow's start-up log
lines) into the outputs, as in ``lhc run``.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from nbval.plugin import get_sanitize_patterns

from lhc.workbench import notebook_sequence

REPO = Path(__file__).resolve().parents[1]
SANITIZER = REPO / "notebooks" / "nbval_sanitize.cfg"
FAST_NOTEBOOK = REPO / "notebooks" / "07_efficiency.ipynb"
# A stable metric line of 07_efficiency: the L1 > G1 threshold of the paper's worked case.
METRIC_LINE = "k = 7/27 = 0.259259"


def run_nbval(notebooks: list[Path], workdir: Path, timeout: float) -> subprocess.CompletedProcess:
    """Copy ``notebooks`` into ``workdir/notebooks`` and run pytest --nbval on them, in order."""
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
    # -x: a notebook's later cells, and the later notebooks, depend on the failing cell.
    command = [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-q", "-x", "--nbval",
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


@pytest.mark.slow
def test_committed_outputs_match_a_fresh_smoke_run(tmp_path):
    """The whole sequence, in order, against its committed outputs (about 3 minutes here)."""
    result = run_nbval(notebook_sequence(), tmp_path, timeout=1500)
    assert result.returncode == 0, failure_report(result)
