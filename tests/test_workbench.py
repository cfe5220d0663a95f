"""The notebook sequence (lhc.workbench, ``lhc run``): selection, parameters, failures.

Most cases execute small notebooks written here (a kernel start is about 2 s); two execute
the real fast notebooks 07 and 09 with non-default parameters (01 has its own such tests in
test_notebook_data.py), and one slow case runs the whole sequence through ``lhc run``.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from fractions import Fraction
from pathlib import Path

import papermill
import pytest
from conftest import write_notebook

from lhc.cli.run import add_cli, notebook_parameters
from lhc.run_report import FACE_FIGURES
from lhc.workbench import (
    NOTEBOOKS_DIR,
    NotebookFailed,
    environment_summary,
    execute_notebook,
    notebook_sequence,
    run_sequence,
    select_notebooks,
)

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # the kernels inherit it
SEQUENCE = [Path(name) for name in ("01_data.ipynb", "02_train_backbone.ipynb", "04_evaluate.ipynb",
                                    "05_ablation.ipynb", "05b_head_correlation.ipynb",
                                    "07_efficiency.ipynb")]


def stdout_of(notebook: Path) -> str:
    cells = json.loads(notebook.read_text())["cells"]
    return "".join("".join(output["text"]) for cell in cells for output in cell.get("outputs", [])
                   if output.get("name") == "stdout")


def names(paths: list[Path]) -> list[str]:
    return [path.stem for path in paths]


# --- selection ----------------------------------------------------------------------------


def test_select_all_only_and_from():
    assert select_notebooks(SEQUENCE) == SEQUENCE
    assert names(select_notebooks(SEQUENCE, only="04,05")) == [
        "04_evaluate", "05_ablation", "05b_head_correlation"]
    assert names(select_notebooks(SEQUENCE, only=["05b"])) == ["05b_head_correlation"]
    assert names(select_notebooks(SEQUENCE, only="07_efficiency, 01")) == [
        "01_data", "07_efficiency"]
    assert names(select_notebooks(SEQUENCE, start="05b")) == [
        "05b_head_correlation", "07_efficiency"]
    assert names(select_notebooks(SEQUENCE, start="04")) == [
        "04_evaluate", "05_ablation", "05b_head_correlation", "07_efficiency"]


@pytest.mark.parametrize(("only", "start", "message"), [
    ("03", None, "only: no notebook '03'; the sequence has 01, 02, 04, 05, 05b, 07"),
    ("04,6", None, "only: no notebook '6'"),
    (None, "08", "from: no notebook '08'"),
    ("04", "05", "not both"),
])
def test_select_rejects_unknown_keys(only, start, message):
    with pytest.raises(ValueError, match=message):
        select_notebooks(SEQUENCE, only=only, start=start)


def test_sequence_is_the_numbered_notebooks_in_order(tmp_path):
    for name in ("05b_b.ipynb", "10_late.ipynb", "01_a.ipynb", "05_a.ipynb", "scratch.ipynb",
                 ".01_a.running.ipynb", "1_short.ipynb", "02_x.txt"):
        (tmp_path / name).write_text("{}")
    assert names(notebook_sequence(tmp_path)) == ["01_a", "05_a", "05b_b", "10_late"]
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="empty: no numbered notebook"):
        notebook_sequence(tmp_path / "empty")
    with pytest.raises(FileNotFoundError, match="missing: no notebooks folder"):
        notebook_sequence(tmp_path / "missing")


def test_every_shipped_notebook_declares_run_dir_as_a_plain_scalar():
    for notebook in notebook_sequence():
        declared = papermill.inspect_notebook(str(notebook))
        assert declared["run_dir"]["default"] == '"runs/smoke"', notebook.name
        for name, parameter in declared.items():
            # papermill injects tuples and other containers as strings
            assert parameter["default"][0] not in "([{", f"{notebook.name}: {name}"


# --- execution ----------------------------------------------------------------------------


def test_only_declared_parameters_are_injected(tmp_path):
    source = write_notebook(tmp_path / "01_probe.ipynb", 'run_dir = "runs/smoke"\nseed = 0',
                            "import os\nprint(f'run_dir={run_dir} seed={seed} cwd={os.getcwd()}')")
    output = tmp_path / "out" / "01_probe.ipynb"

    injected = execute_notebook(source, output, {"run_dir": "elsewhere", "seed": 7,
                                                 "profile": "cpu", "show_images": False},
                                cwd=tmp_path / "out")

    assert injected == {"run_dir": "elsewhere", "seed": 7}
    assert f"run_dir=elsewhere seed=7 cwd={tmp_path / 'out'}\n" == stdout_of(output)
    assert sorted(path.name for path in output.parent.iterdir()) == ["01_probe.ipynb"]
    # Written as JupyterLab writes it: opening and saving it there would change nothing.
    assert output.read_text(encoding="utf-8") == jupyter_saved(output)


def jupyter_saved(path: Path) -> str:
    """The text JupyterLab's server writes when ``path`` is opened and saved, unchanged."""
    import shutil
    import tempfile

    from jupyter_server.services.contents.filemanager import FileContentsManager

    with tempfile.TemporaryDirectory() as folder:
        shutil.copy(path, Path(folder) / path.name)
        contents = FileContentsManager(root_dir=folder)
        model = contents.get(path.name, content=True, type="notebook")
        contents.save({"type": "notebook", "format": "json", "content": model["content"]},
                      path.name)
        return (Path(folder) / path.name).read_text(encoding="utf-8")


@pytest.mark.parametrize("notebook", notebook_sequence(), ids=lambda path: path.stem)
def test_a_committed_notebook_opened_and_saved_in_jupyterlab_stays_byte_identical(notebook):
    assert notebook.read_text(encoding="utf-8") == jupyter_saved(notebook)
    metadata = json.loads(notebook.read_text(encoding="utf-8"))["metadata"]
    assert "papermill" not in metadata, "refresh_outputs strips the execution record"


def test_committed_notebooks_name_the_kernel_make_installs():
    """`make lab` opens them on "Python (lhc)", the environment's own kernel."""
    import re

    install = re.search(r"ipykernel install --sys-prefix --name (\S+) --display-name \"([^\"]+)\"",
                        (NOTEBOOKS_DIR.parent / "Makefile").read_text())
    assert install, "the Makefile installs the project's kernel"
    expected = {"display_name": install[2], "language": "python", "name": install[1]}
    assert expected == {"display_name": "Python (lhc)", "language": "python", "name": "lhc"}
    for notebook in notebook_sequence():
        kernelspec = json.loads(notebook.read_text(encoding="utf-8"))["metadata"]["kernelspec"]
        assert kernelspec == expected, notebook.name
    installed = Path(sys.prefix) / "share" / "jupyter" / "kernels" / install[1] / "kernel.json"
    if installed.exists():  # make venv installs it; a hand-made environment may not
        assert json.loads(installed.read_text())["display_name"] == install[2]


def test_a_notebook_without_run_dir_is_refused(tmp_path):
    source = write_notebook(tmp_path / "01_probe.ipynb", "seed = 0", "print(seed)")
    with pytest.raises(ValueError, match="declares no run_dir"):
        execute_notebook(source, tmp_path / "out.ipynb", {"run_dir": "x"})


def test_sequence_stops_at_the_first_failure_and_keeps_the_notebook(tmp_path):
    notebooks = tmp_path / "notebooks"
    write_notebook(notebooks / "01_write.ipynb", 'run_dir = "runs/smoke"\nshow_images = True',
                   "from pathlib import Path\nPath(run_dir).mkdir(parents=True, exist_ok=True)\n"
                   "(Path(run_dir) / 'marker.txt').write_text(str(show_images))")
    write_notebook(notebooks / "02_fail.ipynb", 'run_dir = "runs/smoke"',
                   "print('before the failure')",
                   "value = 41\nraise ValueError(f'bad value {value}')",
                   "print('never reached')")
    write_notebook(notebooks / "03_never.ipynb", 'run_dir = "runs/smoke"', "print('ran')")
    run_dir = tmp_path / "run"
    lines = []

    with pytest.raises(NotebookFailed) as failure:
        run_sequence("smoke", out=run_dir, images=False, notebooks_dir=notebooks, log=lines.append)

    message = str(failure.value)
    # executed: the parameters cell, papermill's injected one, the print, the raise
    assert message.startswith("02_fail.ipynb failed in cell In [4] (`value = 41`): "
                              "ValueError: bad value 41")
    assert f"partially executed notebook kept: {run_dir / 'notebooks' / '02_fail.ipynb'}" in message
    assert failure.value.notebook == "02_fail"
    assert (run_dir / "marker.txt").read_text() == "False"  # images=False -> show_images=False
    kept = json.loads((run_dir / "notebooks" / "02_fail.ipynb").read_text())
    errors = [output for cell in kept["cells"] for output in cell.get("outputs", [])
              if output["output_type"] == "error"]
    assert [(error["ename"], error["evalue"]) for error in errors] == [("ValueError", "bad value 41")]
    assert "before the failure" in stdout_of(run_dir / "notebooks" / "02_fail.ipynb")
    assert "never reached" not in stdout_of(run_dir / "notebooks" / "02_fail.ipynb")
    assert not (run_dir / "notebooks" / "03_never.ipynb").exists()
    assert not list((run_dir / "notebooks").glob(".*running*"))
    manifest = json.loads((run_dir / "workbench.json").read_text())
    assert [(r["notebook"], r["status"]) for r in manifest["notebooks"]] == [
        ("01_write", "done"), ("02_fail", "failed")]
    assert manifest["notebooks"][0]["parameters"] == {"run_dir": str(run_dir),
                                                      "show_images": False}
    assert lines[1] == "[1/3] 01_write ..." and lines[2].startswith("[1/3] 01_write done in ")
    assert lines[3] == "[2/3] 02_fail ..." and len(lines) == 4

    # After a fix, --from 02 runs the rest and keeps 01's record.
    write_notebook(notebooks / "02_fail.ipynb", 'run_dir = "runs/smoke"', "print('fixed')")
    run_sequence("smoke", out=run_dir, start="02", notebooks_dir=notebooks, log=lines.append)
    manifest = json.loads((run_dir / "workbench.json").read_text())
    assert [(r["notebook"], r["status"]) for r in manifest["notebooks"]] == [
        ("01_write", "done"), ("02_fail", "done"), ("03_never", "done")]
    assert stdout_of(run_dir / "notebooks" / "03_never.ipynb") == "ran\n"


def test_unknown_profile_fails_before_anything_runs(tmp_path):
    with pytest.raises(ValueError, match="profile .nonexistent.: neither a shipped profile"):
        run_sequence("nonexistent", out=tmp_path / "run", notebooks_dir=tmp_path)
    assert not (tmp_path / "run").exists()


def test_environment_summary_reads_this_machine():
    import numpy

    summary = environment_summary()
    assert summary["python"] == ".".join(map(str, sys.version_info[:3]))
    assert summary["packages"]["numpy"] == numpy.__version__
    assert summary["cpu_cores"] == os.cpu_count()
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.exists():
        models = [line.split(":", 1)[1].strip() for line in cpuinfo.read_text().splitlines()
                  if line.startswith("model name")]
        assert summary["cpu"] == models[0]


# --- the real notebooks with other parameters ----------------------------------------------


def test_efficiency_notebook_with_other_parameters(tmp_path):
    num_heads, hw = 4, 784
    output = tmp_path / "07.ipynb"
    execute_notebook(NOTEBOOKS_DIR / "07_efficiency.ipynb", output,
                     {"run_dir": str(tmp_path / "run"), "num_heads": num_heads, "hw": hw})

    text = stdout_of(output)
    # Paper section 2.2's worked case d = HW/(2n): the threshold is (n - 1)/(3(n + 1)).
    threshold = Fraction(num_heads - 1, 3 * (num_heads + 1))
    assert f"HW = {hw}, n = {num_heads}, d = HW/(2n) = {hw // (2 * num_heads)}\n" in text
    assert f"k = {threshold} = {float(threshold):.6f}" in text
    assert sorted(path.name for path in (tmp_path / "run" / "figures").iterdir()) == [
        "efficiency_l1_vs_g1_ab_map.png", "efficiency_l1_vs_g1_ab_map.svg",
        "efficiency_threshold_vs_heads_and_dim_ratio.png",
        "efficiency_threshold_vs_heads_and_dim_ratio.svg"]


def test_report_notebook_with_other_parameters(tmp_path):
    from matplotlib.figure import Figure

    from lhc.plots import save_figure

    run_dir = tmp_path / "my-run"
    for name in ("data_class_distribution", "data_samples_per_class", "ablation_heads_kept"):
        fig = Figure(figsize=(2, 2))
        fig.add_subplot().plot([0, 1], [1, 0])
        save_figure(fig, run_dir / "figures" / name)
    output = tmp_path / "08.ipynb"

    execute_notebook(NOTEBOOKS_DIR / "09_report.ipynb", output,
                     {"run_dir": str(run_dir), "out": str(tmp_path / "report"), "images": False})

    text = stdout_of(output)
    assert f"report: {tmp_path / 'report' / 'report.html'} (" in text
    assert "left out (they show faces): data_samples_per_class" in text
    assert sorted(path.name for path in (tmp_path / "report" / "figures").iterdir()) == [
        "ablation_heads_kept.png", "ablation_heads_kept.svg",
        "data_class_distribution.png", "data_class_distribution.svg"]


# --- the command line and the whole sequence -------------------------------------------------


def parse(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="lhc")
    add_cli(parser.add_subparsers(dest="command", required=True))
    return parser.parse_args(argv)


def test_run_options():
    args = parse("run")
    assert (args.profile, args.data, args.out, args.only, args.start, args.images) == (
        "smoke", None, None, None, None, True)
    args = parse("run", "--profile", "cpu", "--data", "d.csv", "--out", "runs/x", "--from", "03",
                 "--no-images")
    assert (args.profile, args.data, args.out, args.start, args.images) == (
        "cpu", "d.csv", "runs/x", "03", False)
    with pytest.raises(SystemExit):
        parse("run", "--only", "04", "--from", "03")
    args = parse("run", "-p", "split", "val", "--parameter", "sample_size", "1200",
                 "-p", "train_global", "false")
    assert notebook_parameters(args.parameters) == {"split": "val", "sample_size": 1200,
                                                    "train_global": False}
    with pytest.raises(SystemExit):
        parse("run", "-p", "split")


def test_a_parameter_no_selected_notebook_declares_is_refused(tmp_path):
    notebooks = tmp_path / "notebooks"
    write_notebook(notebooks / "01_probe.ipynb", 'run_dir = "runs/smoke"\nsplit = "test"',
                   "print(split)")
    run_dir = tmp_path / "run"
    with pytest.raises(ValueError, match=r"parameter\(s\) splt declared by none of 01_probe; "
                                         r"they declare: run_dir, split"):
        run_sequence("smoke", out=run_dir, notebooks_dir=notebooks, parameters={"splt": "val"})
    assert not run_dir.exists()
    run_sequence("smoke", out=run_dir, notebooks_dir=notebooks, parameters={"split": "val"},
                 log=lambda line: None)
    assert stdout_of(run_dir / "notebooks" / "01_probe.ipynb") == "val\n"


@pytest.mark.slow
def test_lhc_run_whole_sequence_without_images(tmp_path, smoke_training):
    """``lhc run --out DIR --no-images`` on the smoke default, end to end (about 2 minutes).

    The run folder starts with the session's finished smoke training copied in, so notebooks
    02 and 03 find their stages done (a run resumed by ``lhc run``, as after ``lhc train``);
    training inside the sequence is what the nbval check of the whole sequence runs.
    """
    import shutil

    trained, _ = smoke_training
    # Not the global arm another test may have trained beside it: 05b trains its own.
    shutil.copytree(trained, tmp_path / "runs" / "e2e", ignore=shutil.ignore_patterns("global_arm"))
    script = ("import argparse, sys\nfrom lhc.cli.run import add_cli\n"
              "parser = argparse.ArgumentParser(prog='lhc')\n"
              "add_cli(parser.add_subparsers(dest='command', required=True))\n"
              "args = parser.parse_args(sys.argv[1:])\nsys.exit(args.func(args))\n")
    result = subprocess.run([sys.executable, "-c", script, "run", "--out", "runs/e2e",
                             "--no-images"], cwd=tmp_path, capture_output=True, text=True,
                            timeout=1200)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]

    run_dir = tmp_path / "runs" / "e2e"
    trained_notebook = (run_dir / "notebooks" / "02_train_backbone.ipynb").read_text()
    assert "stage1 resnet34v2: already done" in trained_notebook
    sequence = notebook_sequence()
    assert sorted(path.name for path in (run_dir / "notebooks").glob("*.ipynb")) == [
        path.name for path in sequence]
    manifest = json.loads((run_dir / "workbench.json").read_text())
    assert [(r["notebook"], r["status"]) for r in manifest["notebooks"]] == [
        (path.stem, "done") for path in sequence]
    for position, path in enumerate(sequence, 1):
        assert f"[{position}/{len(sequence)}] {path.stem} done in " in result.stdout
    # What a reader opens next comes last: the report the sequence wrote.
    assert result.stdout.strip().splitlines()[-1] == "report: reports/e2e/report.html"
    # the notebooks drew no faces, and the report (in the current directory) shows none
    figures = {path.stem for path in (run_dir / "figures").glob("*.png")}
    assert figures and not any(name.startswith(FACE_FIGURES) for name in figures)
    report = tmp_path / "reports" / "e2e"
    assert {path.stem for path in (report / "figures").glob("*.png")} == figures
    html = (report / "report.html").read_text()
    assert html.count("<img ") == len(figures)


def test_run_and_report_never_import_tensorflow_in_this_process(tmp_path):
    """The kernels import it; the process that drives them stays small and starts fast."""
    write_notebook(tmp_path / "notebooks" / "01_probe.ipynb", 'run_dir = "runs/smoke"', "print(1)")
    script = ("import sys\nfrom lhc.workbench import run_sequence\nfrom lhc.run_report import build_report\n"
              f"run_sequence('smoke', out={str(tmp_path / 'run')!r}, "
              f"notebooks_dir={str(tmp_path / 'notebooks')!r}, log=lambda line: None)\n"
              f"build_report({str(tmp_path / 'run')!r}, {str(tmp_path / 'report')!r})\n"
              "print(sorted(name for name in ('tensorflow', 'keras') if name in sys.modules))\n")
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                            timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout == "[]\n"
    assert (tmp_path / "report" / "report.html").is_file()
