"""The GPU run kit (issue 17): gpu/make_kit.py's size accounting and wheel archive, gpu/run.py's
options, wheel installation, deadlines and result files, and its dry run end to end.

The full dry run under the GPU machine's conditions (a fresh environment without TensorFlow
and Keras, Keras from the kit alone) is a manual check: README, "The GPU run (issue 17)".
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import json
import os
import subprocess
import sys
import tarfile
import time
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def _load(name: str):
    spec = importlib.util.spec_from_file_location(f"gpu_{name}", REPO / "gpu" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


make_kit = _load("make_kit")
run = _load("run")


def _fake_wheel(folder: Path, name: str, version: str, tag: str = "py3-none-any",
                modules: dict[str, str] | None = None) -> Path:
    """A minimal wheel: modules, NAME.data/purelib and scripts parts, and its dist-info."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{name}-{version}-{tag}.whl"
    info = f"{name}-{version}.dist-info"
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as wheel:
        for module, text in (modules or {}).items():
            wheel.writestr(module, text)
        wheel.writestr(f"{name}-{version}.data/purelib/{name}_extra.py", "EXTRA = 1\n")
        wheel.writestr(f"{name}-{version}.data/scripts/{name}-tool", "#!/bin/sh\n")
        wheel.writestr(f"{info}/METADATA",
                       f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n")
        wheel.writestr(f"{info}/RECORD", "")
    return path


def _git(repo: Path, *args: str) -> None:
    subprocess.run(["git", *args], cwd=repo, check=True, capture_output=True)


# --- make_kit ------------------------------------------------------------------------------

def test_size_report_counts_kit_tracked_and_untracked_not_ignored(tmp_path):
    repo = tmp_path / "repo"
    repo.mkdir()
    _git(repo, "init", "-q")
    (repo / ".gitignore").write_text("ignored.bin\n/.gpu-kit/\n")
    (repo / "tracked.bin").write_bytes(b"t" * 1000)
    (repo / "gone.bin").write_bytes(b"g" * 700)
    _git(repo, "add", ".gitignore", "tracked.bin", "gone.bin")
    (repo / "gone.bin").unlink()                       # tracked, deleted: does not travel
    (repo / "untracked.txt").write_bytes(b"u" * 500)   # untracked, not ignored: travels
    (repo / "ignored.bin").write_bytes(b"i" * 9000)    # ignored: stays
    kit = repo / ".gpu-kit"
    kit.mkdir()
    (kit / "wheels.tar.xz").write_bytes(b"w" * 300)
    (kit / "fer2013.lhcpack").write_bytes(b"p" * 2000)
    (kit / "sub").mkdir()
    (kit / "sub" / "x").write_bytes(b"x" * 10)

    tracked = 1000 + len("ignored.bin\n/.gpu-kit/\n")
    report = make_kit.size_report(kit, repo, limit_mib=1.0)
    assert report.kit == {"fer2013.lhcpack": 2000, "sub/x": 10, "wheels.tar.xz": 300}
    assert (report.tracked, report.untracked) == (tracked, 500)
    assert report.total == 2310 + tracked + 500
    assert report.fits
    assert not make_kit.size_report(kit, repo, limit_mib=(report.total - 1) / 2**20).fits
    assert make_kit.size_report(kit, repo, limit_mib=report.total / 2**20).fits
    assert report.to_dict()["total_bytes"] == report.total
    assert any(line.startswith("total that travels") and f"{report.total:,}" in line
               for line in report.lines())


def test_wheels_archive_holds_the_wheels_stored_and_run_installs_them(tmp_path):
    downloads = tmp_path / "downloads"
    module = _fake_wheel(downloads, "gpukit_fake", "1.2.3",
                         modules={"gpukit_fake/__init__.py": "VALUE = 7\n" * 200})
    yaml_version = importlib.metadata.version("pyyaml")
    present = _fake_wheel(downloads, "PyYAML", yaml_version, modules={"yaml_shadow.py": ""})
    other_python = _fake_wheel(downloads, "gpukit_old", "0.1", tag="cp27-cp27mu-manylinux1_x86_64",
                               modules={"gpukit_old.py": ""})
    kit = tmp_path / "kit"
    kit.mkdir()
    entries = make_kit.write_wheels_archive([module, present, other_python],
                                            kit / make_kit.WHEELS_ARCHIVE)
    assert [entry["file"] for entry in entries] == sorted(
        path.name for path in (module, present, other_python))
    with tarfile.open(kit / make_kit.WHEELS_ARCHIVE, "r:xz") as archive:
        stored = zipfile.ZipFile(archive.extractfile(module.name))
        assert {info.compress_type for info in stored.infolist()} == {zipfile.ZIP_STORED}
        with zipfile.ZipFile(module) as original:
            assert [(i.filename, original.read(i)) for i in original.infolist()] == \
                   [(i.filename, stored.read(i)) for i in stored.infolist()]

    site = tmp_path / "work" / "site"
    record = run.install_kit_wheels(kit, tmp_path / "work", site)
    assert record["installed"] == [module.name]
    assert "is installed here" in record["skipped"][present.name]
    assert "not for Python" in record["skipped"][other_python.name]
    assert (site / "gpukit_fake_extra.py").exists()          # .data/purelib merged
    assert not list(site.rglob("gpukit_fake-tool"))            # .data/scripts left out
    assert not (site / "yaml_shadow.py").exists()
    env = run.child_environment(site, environ={"PATH": os.environ["PATH"], "PYTHONPATH": "/x"})
    assert env["PYTHONPATH"].split(os.pathsep) == [str(site), str(run.REPO), "/x"]
    assert env["KERAS_BACKEND"] == "jax"
    shown = subprocess.run([sys.executable, "-c", "import gpukit_fake; print(gpukit_fake.VALUE)"],
                           env=env, capture_output=True, text=True, check=True)
    assert shown.stdout.strip() == "7"


def test_install_without_a_kit_names_the_missing_archive(tmp_path):
    record = run.install_kit_wheels(tmp_path / "nokit", tmp_path / "work", tmp_path / "site")
    assert record["installed"] == [] and "make gpu-kit" in record["error"]


def test_make_kit_main_builds_offline_from_the_cache_and_enforces_the_limit(tmp_path, capsys):
    cache = tmp_path / "cache"
    for name, version in make_kit.installed_versions().items():
        _fake_wheel(cache, make_kit._normalise(name), version, modules={f"{name}_fake.py": ""})
    kit = tmp_path / "kit"
    (kit / "leftover").mkdir(parents=True)           # not part of the kit: removed
    arguments = ["--no-data", "--kit", str(kit), "--cache", str(cache)]
    assert make_kit.main(arguments + ["--limit-mib", "1000"]) == 0
    shown = capsys.readouterr()
    assert sorted(path.name for path in kit.iterdir()) == ["manifest.json", "wheels.tar.xz"]
    manifest = json.loads((kit / "manifest.json").read_text())
    assert sorted(wheel["name"] for wheel in manifest["wheels"]) == \
           sorted(make_kit._normalise(name) for name in make_kit.KIT_DISTRIBUTIONS)
    report = make_kit.size_report(kit, make_kit.REPO)
    assert f"{report.total:,} bytes" in shown.out and "fits:" in shown.out
    assert make_kit.main(arguments + ["--limit-mib", "0.001"]) == 1
    assert "over the 0.001 MiB limit" in capsys.readouterr().err


def test_make_kit_refuses_a_missing_source(tmp_path, capsys):
    cache = tmp_path / "cache"
    for name, version in make_kit.installed_versions().items():
        _fake_wheel(cache, make_kit._normalise(name), version)
    assert make_kit.main(["--source", str(tmp_path / "absent.csv"), "--kit",
                          str(tmp_path / "kit"), "--cache", str(cache)]) == 1
    assert "absent.csv: no such FER2013 source" in capsys.readouterr().err


# --- run.py options ------------------------------------------------------------------------

def test_run_options_device_and_dry_run_defaults(tmp_path):
    environ = {"OUT": str(tmp_path / "out"), "TMPDIR": str(tmp_path / "tmp")}
    device = run.parse_args([], environ)
    assert (device.profile, device.data) == ("gpu", str(run.DEFAULT_KIT / "fer2013.lhcpack"))
    assert device.out == tmp_path / "out" and device.work == tmp_path / "tmp" / "lhc-gpu-run"
    assert (device.budget, device.reserve, device.require_gpu) == (570.0, 80.0, True)
    assert device.evaluate == ["stage4", "stage3", "lhcc"] and device.tta == "flip"

    dry = run.parse_args(["--dry-run", "--budget", "300", "--evaluate", "stage1"], environ)
    assert dry.profile == str(dry.work / "gpu-dry-run.yaml")
    assert (dry.data, dry.require_gpu, dry.budget, dry.evaluate) == ("synthetic", False, 300.0,
                                                                    ["stage1"])
    chosen = run.parse_args(["--dry-run", "--profile", "smoke", "--data", "x.csv",
                             "--out", str(tmp_path / "o2"), "--evaluate", ""], environ)
    assert (chosen.profile, chosen.data, chosen.out, chosen.evaluate) == (
        "smoke", "x.csv", tmp_path / "o2", [])


@pytest.mark.parametrize("argv, environ, message", [
    ([], {}, "set OUT or pass --out"),
    (["--budget", "60", "--reserve", "80"], {"OUT": "o"}, "need a budget above the reserve"),
    (["--reserve", "5"], {"OUT": "o"}, "a reserve of at least"),
    (["--work", "o/w"], {"OUT": "o"}, "must lie outside the results folder"),
    (["--tta", "many"], {"OUT": "o"}, "invalid choice"),
])
def test_run_options_refused(argv, environ, message, capsys):
    with pytest.raises(SystemExit) as stop:
        run.parse_args(argv, environ)
    assert stop.value.code == 2 and message in capsys.readouterr().err


def test_dry_run_profile_is_the_tiny_smoke_profile(tmp_path):
    from lhc.training import load_profile

    profile = load_profile(run.write_dry_run_profile(tmp_path / "p.yaml"))
    smoke = load_profile("smoke")
    assert (profile.name, profile.input_size, profile.data.n) == ("gpu-dry-run", 32, 80)
    assert profile.stages["stage1"].batch_size == 16
    assert list(profile.stages) == list(smoke.stages)
    assert profile.stages["stage4"] == smoke.stages["stage4"]


@pytest.mark.parametrize("filename, fits", [
    ("keras-3.15.1-py3-none-any.whl", True),
    ("six-1.0-py2.py3-none-any.whl", True),
    (f"optree-0.20.0-cp{sys.version_info[0]}{sys.version_info[1]}-cp"
     f"{sys.version_info[0]}{sys.version_info[1]}-manylinux_2_27_x86_64.whl", True),
    ("optree-0.20.0-cp27-cp27mu-manylinux1_x86_64.whl", False),
])
def test_wheel_python_tag(filename, fits):
    assert run.wheel_fits_python(filename) is fits


# --- run.py children and results -----------------------------------------------------------

CHILD = """
import signal, sys, time
if sys.argv[1] == "stubborn":
    signal.signal(signal.SIGINT, signal.SIG_IGN)
print("started", flush=True)
try:
    time.sleep(60)
except KeyboardInterrupt:
    print("interrupted", flush=True)
    sys.exit(130)
"""


@pytest.mark.parametrize("kind, rc", [("polite", 130), ("stubborn", -9)])
def test_run_child_interrupts_at_the_deadline_then_kills(tmp_path, kind, rc):
    log = tmp_path / "child.log"
    result = run.run_child([sys.executable, "-c", CHILD, kind], log, dict(os.environ),
                           deadline=time.time() + 3.0, grace=1.0)
    assert result["timed_out"] and result["rc"] == rc
    lines = log.read_text().splitlines()
    assert lines[0].startswith("$ ") and "started" in lines
    assert ("interrupted" in lines) is (kind == "polite")


def test_run_child_passes_the_exit_status(tmp_path):
    result = run.run_child([sys.executable, "-c", "print('x'); raise SystemExit(3)"],
                           tmp_path / "c.log", dict(os.environ))
    assert (result["rc"], result["timed_out"]) == (3, False)


def _fake_run(tmp_path: Path) -> tuple[Path, Path]:
    run_dir, results = tmp_path / "work" / "run", tmp_path / "work" / "results"
    stage = run_dir / "stages" / "stage1" / "resnet34v2"
    (stage / "checkpoints" / "epoch-0001").mkdir(parents=True)
    (run_dir / "metrics.json").write_text(json.dumps({
        "status": "complete", "stages": {"stage1": {"resnet34v2": {
            "epochs_run": 2, "val_accuracy": 0.5, "train_loss": 1.2, "wall_seconds": 3.0}}}}))
    (run_dir / "profile.yaml").write_text("name: x\n")
    (run_dir / "run.json").write_text("{}")
    (stage / "history.csv").write_text("epoch,loss\n1,2.0\n")
    (stage / "summary.json").write_text("{}")
    (stage / "final.weights.h5").write_bytes(os.urandom(600_000))
    (stage / "checkpoints" / "epoch-0001" / "weights.h5").write_bytes(os.urandom(600_000))
    (results / "figures").mkdir(parents=True)
    (results / "logs").mkdir()
    (results / "evaluation.json").write_text(json.dumps(
        {"stages": {"stage1": {"accuracy_without_tta": 0.25, "accuracy_with_tta": 0.375}}}))
    (results / "figures" / "learning_curves_stage1.png").write_bytes(os.urandom(200_000))
    (results / "figures" / "learning_curves_stage1.svg").write_text("<svg/>")
    (results / "logs" / "train.log").write_text("epoch 1\n" * 100)
    return run_dir, results


def test_collect_writes_four_small_files_without_weights(tmp_path):
    run_dir, results = _fake_run(tmp_path)
    out = tmp_path / "out"
    record = {"status": "complete"}
    files = run.collect(run_dir, results, out, record)
    assert files == sorted(run.RESULT_FILES) == sorted(path.name for path in out.iterdir())
    assert len(files) <= run.MAX_FILES
    assert all(path.stat().st_size <= run.MAX_FILE_BYTES for path in out.iterdir())
    with tarfile.open(out / "gpu_run.tar.gz") as archive:
        names = set(archive.getnames())
    assert {"gpu_run/run/metrics.json", "gpu_run/run/profile.yaml", "gpu_run/run/run.json",
            "gpu_run/run/stages/stage1/resnet34v2/history.csv",
            "gpu_run/run/stages/stage1/resnet34v2/summary.json", "gpu_run/evaluation.json",
            "gpu_run/figures/learning_curves_stage1.png", "gpu_run/logs/train.log"} == names
    assert json.loads((out / "gpu_run.json").read_text())["files"] == files
    assert run.accuracies(run_dir, results)["stage1"] == {
        "model": "resnet34v2", "epochs": 2, "val_accuracy_training": 0.5, "train_loss": 1.2,
        "wall_seconds": 3.0, "accuracy_without_tta": 0.25, "accuracy_with_tta": 0.375}


def test_collect_leaves_figures_out_of_an_archive_over_the_limit(tmp_path):
    run_dir, results = _fake_run(tmp_path)
    out = tmp_path / "out"
    record: dict = {}
    run.collect(run_dir, results, out, record, max_bytes=100_000)
    assert record["archive_left_out"] == ["figures/learning_curves_stage1.png"]
    assert (out / "gpu_run.tar.gz").stat().st_size <= 100_000
    with tarfile.open(out / "gpu_run.tar.gz") as archive:
        assert "gpu_run/run/stages/stage1/resnet34v2/history.csv" in archive.getnames()
