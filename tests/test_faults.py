"""Fault injection: runs that survive damage, one writer per run, interrupts and full disks.

Each case damages a run the way a user's machine would (a truncated file, flipped bytes, NaN
weights behind a matching digest, a truncated index, a second writer, Ctrl-C, a full disk) and
asserts the outcome: the same metrics as an uninterrupted run after the fall back, one line
naming the file, a refused writer, the exit status.

Every training here uses one profile, the tiny machinery profile (``conftest.tiny_profile``)
with stage 1 running three epochs, so that a run stopped after epoch 2 has two checkpoints
to fall back between. The uninterrupted run it is compared with is trained in this process;
training is deterministic on one machine, so a resumed run must match it exactly.

The CLI's last rough edges follow: ``lhc predict`` with nothing to predict must fail; huge
photos give one face, found in a scanned copy and mapped back, and annotated copies of bounded
size; ``lhc data-report --allow-resize``; ``lhc synth`` names the file it wrote. The real photo
is scikit-image's astronaut (Eileen Collins, one frontal face). Where its face is, is derived
from the original 512x512 photo (which the detector scans as it is), or from its
skin-coloured pixels by the RGB rule of Peer et al. (2003), which knows nothing of cascades.
"""

from __future__ import annotations

import contextlib
import csv
import errno
import json
import logging
import os
import re
import shutil
import signal
import subprocess
import sys
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import cv2
import h5py
import numpy as np
import pytest
from conftest import (
    h5_arrays,
    history_rows,
    skin_mask,
    tiny_profile,
    wait_for_checkpoint,
    write_notebook,
)
from PIL import Image

from lhc._io import DiskFull, file_digest, write_json
from lhc.cli import main
from lhc.predict import detect_faces, to_grey
from lhc.training import load_profile, resume, train
from lhc.training.run_lock import LOCK_FILE, RunLocked
from lhc.workbench import SequenceInterrupted, run_sequence

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[1]
STAGE = Path("stages/stage1/resnet34v2")
CHECKPOINTS = STAGE / "checkpoints"
EPOCHS = 3
TIMEOUT = 600  # seconds a subprocess may take to reach a checkpoint on a slow machine


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """The profile file, an uninterrupted run and a run Ctrl-C'd after epoch 2's checkpoint.

    The interrupted run is a real ``lhc train`` process sent SIGINT as soon as the second
    checkpoint is published; its exit status and last line are kept for the interrupt test.
    """
    root = tmp_path_factory.mktemp("faults")
    profile_path = root / "faults.yaml"
    # Plain SGD: no optimizer moments, so each checkpoint is a third of Adam's to write,
    # digest and verify; the faults do not depend on the optimizer.
    profile_path.write_text(tiny_profile("faults").replace_stage(
        "stage1", max_epochs=EPOCHS, patience=EPOCHS, optimizer="sgd",
        learning_rate=0.01).to_yaml())
    interrupted = root / "interrupted"
    process = lhc_process("train", "--profile", str(profile_path), "--out", str(interrupted),
                          "--stages", "1", "--verbose", "0")
    wait_for_checkpoint(process, interrupted / CHECKPOINTS, epoch=2, timeout=TIMEOUT)
    process.send_signal(signal.SIGINT)
    stdout, stderr = process.communicate(timeout=TIMEOUT)
    reference = root / "reference"
    metrics = train(load_profile(profile_path), out=reference, stages="1", verbose=0)
    yield {"profile": profile_path, "reference": reference, "metrics": metrics,
           "interrupted": interrupted, "returncode": process.returncode, "stderr": stderr}
    shutil.rmtree(root, ignore_errors=True)


def lhc_process(*argv: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "lhc.cli", *argv], cwd=REPO, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def assert_ends_as_uninterrupted(run_dir: Path, runs: dict) -> None:
    """Same per-epoch losses and accuracies, same test metrics, same final weights, bit for bit."""
    reference = runs["reference"]
    assert history_rows(run_dir / STAGE) == history_rows(reference / STAGE)
    summary = json.loads((run_dir / STAGE / "summary.json").read_text())
    expected = runs["metrics"]["stages"]["stage1"]["resnet34v2"]
    for key in ("best_epoch", "epochs_run", "train_loss", "val_loss", "val_accuracy",
                "test_loss", "test_accuracy"):
        assert summary[key] == expected[key], key
    final, wanted = h5_arrays(run_dir / STAGE / "final.weights.h5"), \
        h5_arrays(reference / STAGE / "final.weights.h5")
    assert final.keys() == wanted.keys()
    for name, array in wanted.items():
        np.testing.assert_array_equal(final[name], array, err_msg=name)


@contextlib.contextmanager
def warnings_of_lhc():
    """The lines the workbench's loggers warn with during the block."""
    lines: list[str] = []
    handler = logging.Handler(logging.WARNING)
    handler.emit = lambda record: lines.append(record.getMessage())
    logger = logging.getLogger("lhc")
    logger.addHandler(handler)
    try:
        yield lines
    finally:
        logger.removeHandler(handler)


def copy_of_interrupted(runs: dict, tmp_path: Path) -> Path:
    copy = tmp_path / "run"
    shutil.copytree(runs["interrupted"], copy)
    return copy


def rewrite_digest(checkpoint: Path) -> None:
    """Record the files' current sizes and SHA-256, as a writer that digested damage would."""
    digest = json.loads((checkpoint / "digest.json").read_text())
    for name, entry in digest["files"].items():
        entry.update(bytes=(checkpoint / name).stat().st_size,
                     sha256=file_digest(checkpoint / name))
    write_json(checkpoint / "digest.json", digest)


# --- Ctrl-C ------------------------------------------------------------------------------


def test_ctrl_c_in_lhc_train_says_where_it_stopped_and_exits_130(runs):
    assert runs["returncode"] == 130
    lines = runs["stderr"].strip().splitlines()
    run_dir = runs["interrupted"]
    assert lines[-1] == (f"lhc train: {run_dir}: interrupted after epoch 2 of stage1 "
                         f"(resnet34v2); resume with: lhc train --resume {run_dir}")
    assert "Traceback" not in runs["stderr"]
    checkpoints = run_dir / CHECKPOINTS
    assert sorted(path.name for path in checkpoints.iterdir()) == [
        "epoch_0001", "epoch_0002", "latest.json"]
    assert (run_dir / LOCK_FILE).read_text() == ""  # released on the way out
    # Resuming it ends as the uninterrupted run: test_truncated_index_... resumes this very run.


def test_ctrl_c_in_lhc_run_stops_the_kernel_and_records_interrupted(runs, tmp_path):
    run_dir = tmp_path / "run"
    process = lhc_process("run", "--profile", str(runs["profile"]), "--out", str(run_dir),
                          "--only", "02")
    wait_for_checkpoint(process, run_dir / CHECKPOINTS, epoch=1, timeout=TIMEOUT)
    kernels = child_kernels(process.pid)
    process.send_signal(signal.SIGINT)
    _, stderr = process.communicate(timeout=TIMEOUT)

    assert process.returncode == 130
    match = re.fullmatch(
        rf"lhc run: interrupted in 02_train_backbone after epoch (\d) of stage1 \(resnet34v2\); "
        rf"partial notebook kept: {re.escape(str(run_dir / 'notebooks/02_train_backbone.ipynb'))}"
        rf"; resume with: lhc run --profile {re.escape(str(runs['profile']))} --out "
        rf"{re.escape(str(run_dir))} --from 02", stderr.strip().splitlines()[-1])
    assert match, stderr[-2000:]
    assert int(match[1]) == json.loads((run_dir / CHECKPOINTS / "latest.json").read_text())["epoch"]
    assert "Traceback" not in stderr
    assert kernels and not any(alive(pid) for pid in kernels), "the kernel outlived lhc run"
    manifest = json.loads((run_dir / "workbench.json").read_text())
    assert manifest["status"] == "interrupted"
    assert [(r["notebook"], r["status"]) for r in manifest["notebooks"]] == [
        ("02_train_backbone", "interrupted")]
    assert (run_dir / "notebooks/02_train_backbone.ipynb").exists()


def child_kernels(pid: int) -> list[int]:
    """Process ids of the Jupyter kernels ``pid`` started (Linux /proc)."""
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        with contextlib.suppress(OSError):
            parent = int(stat.read_text().rsplit(")", 1)[1].split()[1])
            if parent == pid and b"ipykernel" in (stat.parent / "cmdline").read_bytes():
                found.append(int(stat.parent.name))
    return found


def alive(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] not in "ZX"
    except OSError:
        return False


def printed(notebook: Path) -> str:
    cells = json.loads(notebook.read_text())["cells"]
    return "".join("".join(output["text"]) for cell in cells for output in cell.get("outputs", [])
                   if output.get("name") == "stdout")


def test_a_rerun_keeps_the_interrupted_notebook_beside_the_new_one(tmp_path):
    """The interrupt reaches the sequence as Ctrl-C reaches ``lhc run``: SIGINT to the process
    that runs papermill (the kernel sends it to its parent, then waits to be stopped)."""
    notebooks = tmp_path / "notebooks"
    write_notebook(notebooks / "01_slow.ipynb", 'run_dir = "runs/x"', "print('first part')",
                   "import os, signal, time\nos.kill(os.getppid(), signal.SIGINT)\n"
                   "time.sleep(120)\nprint('never reached')")
    run_dir = tmp_path / "run"
    with pytest.raises(SequenceInterrupted) as stop:
        run_sequence("smoke", out=run_dir, notebooks_dir=notebooks, log=lambda line: None)
    output = run_dir / "notebooks/01_slow.ipynb"
    assert str(stop.value) == f"interrupted in 01_slow; partial notebook kept: {output}"
    assert json.loads((run_dir / "workbench.json").read_text())["notebooks"][0]["status"] == \
        "interrupted"
    partial = output.read_bytes()
    assert printed(output) == "first part\n"  # the cell after it was stopped in its sleep

    write_notebook(notebooks / "01_slow.ipynb", 'run_dir = "runs/x"', "print('second run')")
    lines: list[str] = []
    run_sequence("smoke", out=run_dir, notebooks_dir=notebooks, log=lines.append)
    kept = run_dir / "notebooks/01_slow.interrupted-1.ipynb"
    assert kept.read_bytes() == partial
    assert printed(output) == "second run\n"
    assert "the interrupted run's partial 01_slow.ipynb is kept as " \
           "01_slow.interrupted-1.ipynb" in lines
    manifest = json.loads((run_dir / "workbench.json").read_text())
    assert manifest["status"] == "complete"
    assert [(r["notebook"], r["status"]) for r in manifest["notebooks"]] == [("01_slow", "done")]


# --- damaged checkpoints -----------------------------------------------------------------


def test_truncated_latest_checkpoint_falls_back_to_the_previous_epoch(runs, tmp_path):
    run_dir = copy_of_interrupted(runs, tmp_path)
    weights = run_dir / CHECKPOINTS / "epoch_0002/model.weights.h5"
    written = weights.stat().st_size
    damaged = weights.read_bytes()[: written // 2]
    weights.write_bytes(damaged)

    with warnings_of_lhc() as lines:
        assert resume(run_dir, verbose=0)["status"] == "complete"

    aside = run_dir / STAGE / "damaged/epoch_0002"
    assert lines == [f"{weights}: {len(damaged)} bytes, {written} written (truncated "
                     f"or extended); damaged checkpoint moved to {aside}; resuming from epoch 1"]
    assert (aside / "model.weights.h5").read_bytes() == damaged  # kept for inspection
    assert_ends_as_uninterrupted(run_dir, runs)


def test_corrupted_bytes_in_every_checkpoint_restart_the_stage(runs, tmp_path):
    run_dir = copy_of_interrupted(runs, tmp_path)
    rng = np.random.default_rng(7)
    for epoch in (1, 2):
        weights = run_dir / CHECKPOINTS / f"epoch_000{epoch}/model.weights.h5"
        with open(weights, "r+b") as handle:  # random bytes into the middle of the file
            handle.seek(weights.stat().st_size // 2)
            handle.write(rng.integers(0, 256, 4096, dtype=np.uint8).tobytes())

    with warnings_of_lhc() as lines:
        assert resume(run_dir, verbose=0)["status"] == "complete"

    assert lines == [f"{run_dir / CHECKPOINTS / f'epoch_000{epoch}/model.weights.h5'}: its "
                     f"SHA-256 differs from the one written (bytes changed); damaged checkpoint "
                     f"moved to {run_dir / STAGE / f'damaged/epoch_000{epoch}'}; resuming from "
                     f"the stage's start" for epoch in (2, 1)]
    assert_ends_as_uninterrupted(run_dir, runs)


def test_nan_weights_behind_a_matching_digest_are_never_resumed(runs, tmp_path):
    run_dir = copy_of_interrupted(runs, tmp_path)
    checkpoint = run_dir / CHECKPOINTS / "epoch_0002"
    with h5py.File(checkpoint / "model.weights.h5", "r+") as handle:
        kernels = []
        handle.visititems(lambda name, item: kernels.append(name)
                          if isinstance(item, h5py.Dataset) and item.ndim == 4 else None)
        handle[kernels[0]][0, 0, 0, 0] = np.nan
    rewrite_digest(checkpoint)

    with warnings_of_lhc() as lines:
        metrics = resume(run_dir, verbose=0)

    assert metrics["status"] == "complete" and metrics["diverged"] is None
    assert len(lines) == 1 and lines[0].startswith(
        f"{checkpoint / 'model.weights.h5'}: weights not finite (1 arrays, e.g. {kernels[0]}); "
        f"damaged checkpoint moved to ")
    assert lines[0].endswith("; resuming from epoch 1")
    assert_ends_as_uninterrupted(run_dir, runs)


def test_truncated_index_is_rebuilt_from_the_checkpoints_that_verify(runs, tmp_path):
    run_dir = copy_of_interrupted(runs, tmp_path)
    pointer = run_dir / CHECKPOINTS / "latest.json"
    damaged = pointer.read_text()[:13]
    pointer.write_text(damaged)

    with warnings_of_lhc() as lines:
        assert resume(run_dir, verbose=0)["status"] == "complete"

    aside = run_dir / STAGE / "damaged/latest.json"
    assert len(lines) == 1
    # The text ends mid-way: the parser stops where it does, as an editor numbers it.
    line, column = damaged.count("\n") + 1, len(damaged.rsplit("\n", 1)[-1]) + 1
    assert lines[0] == (f"{pointer}: damaged checkpoint index ({line}:{column}: damaged JSON "
                        f"(Expecting value); 13 characters in all); moved to {aside}; rebuilt "
                        "from the checkpoints that verify")
    assert aside.read_text() == damaged
    history = [row[0] for row in history_rows(run_dir / STAGE)]
    assert history == ["epoch", "1", "2", "3"]
    assert_ends_as_uninterrupted(run_dir, runs)


def test_non_finite_weights_are_never_written_as_a_checkpoint(tmp_path):
    import keras

    from lhc.training.checkpoints import NonFiniteWeights, save_checkpoint, verify_checkpoint

    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2)])
    model.compile(optimizer="sgd", loss="mse")
    model.optimizer.build(model.trainable_variables)
    folder = tmp_path / "checkpoints"
    save_checkpoint(folder, 1, model, {"history": []})
    assert verify_checkpoint(folder / "epoch_0001") is None

    kernel = model.layers[0].kernel
    kernel.assign(np.array([[1.0, np.nan], [0.0, 0.0], [0.0, np.inf]], dtype="float32"))
    with pytest.raises(NonFiniteWeights, match=rf"^{re.escape(str(folder))}: epoch 2's weights "
                                               r"are not finite \(1 variables, e\.g\. "
                                               rf"{re.escape(kernel.path)}\); no checkpoint"):
        save_checkpoint(folder, 2, model, {"history": []})
    assert sorted(path.name for path in folder.iterdir()) == ["epoch_0001", "latest.json"]
    assert json.loads((folder / "latest.json").read_text())["epoch"] == 1


def test_damaged_run_state_is_named_with_its_line(runs, tmp_path):
    run_dir = copy_of_interrupted(runs, tmp_path)
    state = run_dir / "run.json"
    state.write_text(state.read_text()[:40])
    with pytest.raises(ValueError, match=rf"^{re.escape(str(state))}:\d+:\d+: damaged JSON"):
        resume(run_dir, verbose=0)


# --- one writer per run ------------------------------------------------------------------


def test_second_writer_is_refused_and_a_dead_writers_lock_taken_over(runs, tmp_path, capsys):
    run_dir = tmp_path / "run"
    shutil.copytree(runs["reference"], run_dir)  # a finished run: resuming it is a no-op
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys, time\nfrom lhc.training.run_lock import run_lock\n"
         "with run_lock(sys.argv[1], 'lhc train'):\n    print('held', flush=True)\n"
         "    time.sleep(600)", str(run_dir)], cwd=REPO, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline() == "held\n"
        who = rf"in use by lhc train \(process {holder.pid} on [^,]+, since [-:+T0-9]+\)"
        with pytest.raises(RunLocked, match=who):
            resume(run_dir, verbose=0)
        for argv in (["train", "--resume", str(run_dir)],
                     ["train", "--profile", str(runs["profile"]), "--out", str(run_dir)],
                     ["sweep", "--profile", str(runs["profile"]), "--seeds", "1",
                      "--out", str(run_dir)],
                     ["run", "--profile", str(runs["profile"]), "--out", str(run_dir)]):
            code = main(argv)
            error = capsys.readouterr().err
            assert code in (1, 2), argv
            assert re.search(rf"^lhc {argv[0]}: (error: )?{re.escape(str(run_dir.resolve()))}: "
                             f"{who}", error, re.MULTILINE), error
    finally:
        holder.kill()
        holder.wait()

    with warnings_of_lhc() as lines:
        assert resume(run_dir, verbose=0)["status"] == "complete"
    assert re.fullmatch(rf"{re.escape(str(run_dir.resolve()))}: taking over the lock left by lhc "
                        rf"train \(process {holder.pid} on {re.escape(os.uname().nodename)}, "
                        r"since [-:+T0-9]+\), which no longer runs", lines[0]), lines
    assert (run_dir / LOCK_FILE).read_text() == ""


# --- full disks --------------------------------------------------------------------------


@pytest.fixture
def small_disk(runs, tmp_path):
    """A tmpfs that holds the run's data and one checkpoint, not two; skipped where mounting
    is not allowed (the injected-ENOSPC tests below run everywhere)."""
    checkpoint = runs["interrupted"] / CHECKPOINTS / "epoch_0001"
    size = sum(path.stat().st_size for path in checkpoint.iterdir())
    mount = tmp_path / "small"
    mount.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={int(1.3 * size)}", "tmpfs",
                           str(mount)], capture_output=True, text=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs here ({done.stderr.strip()}); the injected "
                    "ENOSPC tests cover the write layer")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], capture_output=True)


def test_full_disk_ends_with_one_line_and_the_run_stays_resumable(runs, small_disk, tmp_path):
    run_dir = small_disk / "run"
    process = lhc_process("train", "--profile", str(runs["profile"]), "--out", str(run_dir),
                          "--stages", "1", "--verbose", "0")
    _, stderr = process.communicate(timeout=TIMEOUT)

    assert process.returncode == 1, stderr[-2000:]
    folder = run_dir / CHECKPOINTS
    assert re.fullmatch(rf"lhc train: error: {re.escape(str(folder))}: no space left on the "
                        rf"device \(about [\d,.]+ MB needed, [\d,.]+ MB free\); free space "
                        rf"there, then resume with: lhc train --resume {re.escape(str(run_dir))}",
                        stderr.strip().splitlines()[-1]), stderr[-2000:]
    assert "Traceback" not in stderr
    assert not [path for path in run_dir.rglob("*") if ".tmp" in path.name or
                path.name.endswith(".partial")], "a half-written file was left"

    moved = tmp_path / "moved"
    shutil.copytree(run_dir, moved)  # the user frees space; here: the run moves to a big disk
    assert resume(moved, verbose=0)["status"] == "complete"
    assert_ends_as_uninterrupted(moved, runs)


def test_enospc_at_the_write_layer_names_the_folder_and_keeps_the_old_file(tmp_path,
                                                                           monkeypatch):
    destination = tmp_path / "metrics.json"
    write_json(destination, {"old": True})
    real_write_text = Path.write_text

    def half_then_full(self, text, *args, **kwargs):
        real_write_text(self, text[: len(text) // 2], *args, **kwargs)
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(Path, "write_text", half_then_full)
    with pytest.raises(DiskFull, match=rf"^{re.escape(str(tmp_path))}: no space left on the "
                                       r"device \([\d,.]+ MB free\)$") as full:
        write_json(destination, {"new": True})
    monkeypatch.undo()
    assert full.value.errno == errno.ENOSPC
    assert json.loads(destination.read_text()) == {"old": True}
    assert sorted(path.name for path in tmp_path.iterdir()) == ["metrics.json"]


def test_enospc_inside_a_checkpoint_leaves_only_intact_ones(runs, tmp_path, monkeypatch, capsys):
    from lhc.training import checkpoints

    run_dir = copy_of_interrupted(runs, tmp_path)

    def full_disk(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(checkpoints.np, "savez", full_disk)  # epoch 3's RNG file
    assert main(["train", "--resume", str(run_dir), "--verbose", "0"]) == 1
    monkeypatch.undo()
    line = capsys.readouterr().err.strip().splitlines()[-1]
    assert line.startswith(f"lhc train: error: {run_dir / CHECKPOINTS}: no space left on the "
                           "device (")
    assert line.endswith(f"; free space there, then resume with: lhc train --resume {run_dir}")
    published = sorted(path.name for path in (run_dir / CHECKPOINTS).iterdir())
    assert published == ["epoch_0001", "epoch_0002", "latest.json"]
    assert all(checkpoints.verify_checkpoint(run_dir / CHECKPOINTS / name) is None
               for name in published[:2])


# --- the CLI's resume of nothing -----------------------------------------------------------


@pytest.mark.parametrize("exists", [False, True])
def test_resume_of_a_missing_or_empty_folder_speaks_cli(tmp_path, capsys, exists):
    folder = tmp_path / "nothing"
    if exists:
        folder.mkdir()
    assert main(["train", "--resume", str(folder)]) == 2
    what = "holds no run (no run.json)" if exists else "does not exist"
    assert capsys.readouterr().err == (
        f"lhc train: error: {folder}: {what}, nothing to resume; start a run there with: "
        f"lhc train --profile NAME --out {folder}\n")
    assert folder.exists() == exists  # nothing created


# --- the CLI's rough edges ---------------------------------------------------------------

HUGE = 8000  # the side of the photos of the issue
ANNOTATED_MAX_SIDE = 2048  # the cap the issue asks for on an annotated picture
PANEL_WIDTH = 260  # the probability panel lhc.predict draws beside the picture
BOX_COLOUR = (0, 158, 115)  # RGB of the boxes lhc.predict draws


@pytest.fixture(scope="module")
def astronaut_face(astronaut):
    """The face's box on the original photo, which the cascade scans at its own size."""
    (box,) = detect_faces(to_grey(astronaut))
    return box


@pytest.fixture(scope="module")
def huge_astronaut(astronaut):
    """The astronaut enlarged 15.625 times to 8000x8000 (bilinear), as a huge photo."""
    return cv2.resize(astronaut, (HUGE, HUGE), interpolation=cv2.INTER_LINEAR)


def iou(first, second):
    """Intersection over union of two ``(x, y, width, height)`` boxes."""
    left, top = max(first[0], second[0]), max(first[1], second[1])
    right = min(first[0] + first[2], second[0] + second[2])
    bottom = min(first[1] + first[3], second[1] + second[3])
    overlap = max(0, right - left) * max(0, bottom - top)
    return overlap / (first[2] * first[3] + second[2] * second[3] - overlap)


def scaled(box, factor):
    return tuple(value * factor for value in box)


def write_rgb(path, rgb):
    cv2.imwrite(str(path), cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))


# lhc predict: nothing predicted ------------------------------------------------------------

def test_predict_fails_when_every_input_is_skipped(model_file, tmp_path, capsys):
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"not a png at all")
    missing = tmp_path / "missing.jpg"

    code = main(["predict", str(model_file), str(broken), str(missing),
                 "--out", str(tmp_path / "out")])

    printed = capsys.readouterr()
    assert code == 1
    assert f"skipped {broken}: not a readable image" in printed.out
    assert f"skipped {missing}: no such file or directory" in printed.out
    assert printed.err.splitlines()[-1] == (
        "lhc predict: nothing predicted: 2 inputs skipped, 0 images read, none with a face")


def test_predict_fails_when_no_image_has_a_face(model_file, tmp_path, capsys):
    blank = tmp_path / "blank.png"
    cv2.imwrite(str(blank), np.full((240, 320, 3), 128, np.uint8))  # no face in flat grey

    code = main(["predict", str(model_file), str(blank), str(tmp_path / "missing.jpg"),
                 "--out", str(tmp_path / "out")])

    printed = capsys.readouterr()
    assert code == 1
    assert f"{blank}: no face found" in printed.out
    assert printed.err.splitlines()[-1] == (
        "lhc predict: nothing predicted: 1 input skipped, 1 image read, none with a face")
    # The tables still say what happened to each input.
    counts = json.loads((tmp_path / "out" / "predictions.json").read_text())["counts"]
    assert counts == {"images": 1, "faces": 0, "images_without_faces": 1, "skipped": 1}


def test_predict_succeeds_when_one_face_is_predicted(model_file, astronaut, tmp_path, capsys):
    photos = tmp_path / "photos"
    photos.mkdir()
    write_rgb(photos / "astronaut.png", astronaut)
    cv2.imwrite(str(photos / "blank.png"), np.full((120, 160), 200, np.uint8))
    (photos / "broken.png").write_bytes(b"")

    code = main(["predict", str(model_file), str(photos), "--out", str(tmp_path / "out")])

    printed = capsys.readouterr()
    assert code == 0
    assert "faces: 1, images: 2, without a face: 1, skipped: 1" in printed.out
    assert "nothing predicted" not in printed.out + printed.err


# Huge photos -------------------------------------------------------------------------------

def test_huge_photo_has_its_one_face_mapped_back_to_full_resolution(
        predictor, astronaut_face, huge_astronaut):
    """8000x8000: the cascade scans a copy of it, but the box is in the photo's own pixels."""
    (face,) = predictor.predict_image(huge_astronaut)  # one face, not seven

    expected = scaled(astronaut_face, HUGE / 512)
    assert iou(face.box, expected) > 0.5
    x, y, width, height = face.box
    assert 0 <= x and 0 <= y and x + width <= HUGE and y + height <= HUGE
    # Its central half is skin: the box lies on the face in the full photo's coordinates.
    centre = huge_astronaut[y + height // 4:y + 3 * height // 4,
                            x + width // 4:x + 3 * width // 4]
    assert skin_mask(centre).mean() > 0.8


@pytest.mark.parametrize("grain", [1, 8])
def test_uniform_noise_has_no_face(predictor, grain):
    """8000x8000 of uniform noise, per pixel or in grains of 8 px (noise drawn at 1000x1000 and
    enlarged, bilinear), where scanning the full image found over a hundred "faces"."""
    noise = np.random.default_rng(20).integers(0, 256, (HUGE // grain, HUGE // grain),
                                               dtype=np.uint8)
    noise = cv2.resize(noise, (HUGE, HUGE), interpolation=cv2.INTER_LINEAR)
    assert detect_faces(noise) == []
    assert predictor.predict_image(noise) == []


def test_small_face_in_a_large_photo_is_below_the_minimum_unless_asked_for(astronaut,
                                                                           astronaut_face):
    """A 95 px face in a 2400x2400 photo is 4% of its side: under the default minimum share
    (1/16 of the shorter side), found when the minimum share is lifted, at its place."""
    canvas = np.random.default_rng(21).integers(0, 256, (2400, 2400), dtype=np.uint8)
    top, left = 700, 900
    canvas[top:top + 512, left:left + 512] = to_grey(astronaut)

    assert detect_faces(canvas) == []
    (box,) = detect_faces(canvas, min_face_fraction=0)
    x, y, width, height = astronaut_face
    assert iou(box, (x + left, y + top, width, height)) > 0.5


def read_rgb(path):
    return cv2.cvtColor(cv2.imread(str(path)), cv2.COLOR_BGR2RGB)


def test_annotated_copy_of_a_huge_photo_is_capped(predictor, astronaut, astronaut_face,
                                                  huge_astronaut, tmp_path):
    photo = tmp_path / "photos" / "astronaut.jpg"  # as a camera writes it
    photo.parent.mkdir()
    write_rgb(photo, huge_astronaut)
    out = tmp_path / "out"

    report = predictor.predict_paths([photo], out=out)

    (result,) = report.results
    (face,) = result.faces
    assert iou(face.box, scaled(astronaut_face, HUGE / 512)) > 0.5
    with open(out / "predictions.csv", newline="") as handle:
        (row,) = csv.DictReader(handle)
    assert tuple(int(row[key]) for key in ("x", "y", "width", "height")) == face.box

    annotated_file = out / "annotated" / "astronaut.png"
    assert annotated_file.stat().st_size < 8_000_000  # not the 31-60 MB of the issue
    annotated = read_rgb(annotated_file)
    assert annotated.shape == (ANNOTATED_MAX_SIDE, ANNOTATED_MAX_SIDE + PANEL_WIDTH, 3)
    # The picture is the whole photo shrunk, not a part of it: back at 512 it is the original,
    # up to the box and caption drawn on it and two resamplings.
    picture = cv2.resize(annotated[:, :ANNOTATED_MAX_SIDE], (512, 512),
                         interpolation=cv2.INTER_AREA)
    assert np.abs(picture.astype(int) - astronaut).mean() < 6
    # The box is drawn where the face is, in the shrunk picture's pixels.
    factor = ANNOTATED_MAX_SIDE / HUGE
    x, y, width, height = face.box
    assert tuple(annotated[round((y + height / 2) * factor), round(x * factor)]) == BOX_COLOUR


def test_annotated_copy_of_a_huge_noisy_photo_is_capped(predictor, tmp_path):
    """Noise is the worst case for PNG: a photo's copy is smaller than this."""
    photo = tmp_path / "photos" / "noise.bmp"  # uncompressed, quick to write and read
    photo.parent.mkdir()
    cv2.imwrite(str(photo), np.random.default_rng(22).integers(0, 256, (HUGE, HUGE),
                                                               dtype=np.uint8))
    out = tmp_path / "out"

    report = predictor.predict_paths([photo], out=out)

    assert report.num_faces == 0 and len(report.results) == 1
    annotated_file = out / "annotated" / "noise.png"
    assert annotated_file.stat().st_size < 8_000_000
    annotated = read_rgb(annotated_file)
    assert max(annotated.shape[:2]) <= ANNOTATED_MAX_SIDE + PANEL_WIDTH
    assert annotated.shape[0] <= ANNOTATED_MAX_SIDE


# lhc data-report --allow-resize ------------------------------------------------------------

def save_grey(path, array):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path)


@pytest.fixture
def folders_with_a_64px_image(tmp_path):
    root = tmp_path / "faces"
    save_grey(root / "train" / "happy" / "Training_1.png", np.full((64, 64), 200, np.uint8))
    save_grey(root / "train" / "sad" / "Training_2.png", np.full((48, 48), 10, np.uint8))
    save_grey(root / "test" / "sad" / "PublicTest_3.png", np.full((48, 48), 60, np.uint8))
    return root


def test_data_report_needs_allow_resize_for_images_not_48px(folders_with_a_64px_image,
                                                             tmp_path, capsys):
    out = tmp_path / "report"
    code = main(["data-report", str(folders_with_a_64px_image), "--out", str(out)])

    error = capsys.readouterr().err
    assert code == 2
    assert str(folders_with_a_64px_image / "train" / "happy" / "Training_1.png") in error
    assert "--allow-resize" in error and "found 64x64" in error
    assert not (out / "data_report.json").exists()


def test_data_report_resizes_with_allow_resize(folders_with_a_64px_image, tmp_path, capsys):
    out = tmp_path / "report"
    code = main(["data-report", str(folders_with_a_64px_image), "--out", str(out),
                 "--allow-resize"])

    printed = capsys.readouterr().out
    assert code == 0
    report = json.loads((out / "data_report.json").read_text())
    assert report["splits"]["train"]["rows"] == 2 and report["splits"]["val"]["rows"] == 1
    assert "1 images resized to 48x48" in printed


# lhc synth ---------------------------------------------------------------------------------

def test_synth_prints_the_path_it_wrote(tmp_path, capsys):
    path = tmp_path / "synthetic.csv"
    assert main(["synth", str(path), "--n", "30", "--seed", "1"]) == 0

    assert capsys.readouterr().out == f"wrote 30 synthetic images to {path}\n"
    lines = path.read_text().splitlines()
    assert lines[0] == "emotion,pixels,Usage" and len(lines) == 31
