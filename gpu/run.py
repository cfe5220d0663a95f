"""The GPU run (issue 17) as one command: ``bash gpu/run.sh`` on the GPU machine, carry ``[".gpu-kit"]``.

From the repository root, within ``--budget`` seconds (default 570, inside the machine's
600 s per command), with only the standard library in this process:

1. **install**: extract ``.gpu-kit/wheels.tar.xz`` (``make gpu-kit``) and unpack each wheel
   into ``WORK/site`` with :mod:`zipfile`, the way pip lays out a pure or platlib wheel (no
   pip needed); a wheel whose distribution is installed here at the same version is left
   out, and so is one built for another Python. ``WORK/site`` and the repository go first on
   the children's ``PYTHONPATH``; ``KERAS_BACKEND=jax``.
2. **environment**: ``gpu/steps.py environment`` checks every module ``import keras`` needs,
   writes the versions and devices, and (except in a dry run) stops the run when JAX sees no
   GPU; ``nvidia-smi`` and ``nvidia-smi -q``, where there is one.
3. **train**: ``python -m lhc.cli train --profile gpu --data .gpu-kit/fer2013.lhcpack --out
   WORK/run --verbose 2`` (the whole protocol at 224, sized to 7 minutes on an H200), its
   output shown and logged. The run folder is outside ``$OUT``: its checkpoints and weights
   are hundreds of MB and must not reach the 8 files that come back. Training is stopped
   with SIGINT (``lhc train`` then says where it stopped and exits 130, resumable with
   ``--resume``; repeated after 10 s) when ``--reserve`` seconds of the budget are left, and
   killed 20 s later.
4. **report**: ``gpu/steps.py report``: stage table, a learning-curve figure per stage, and the
   float32 evaluation with and without ``--tta`` (flip) on ``--split`` (val: PublicTest) of
   each finished stage of ``--evaluate`` (stage4, stage3, lhcc), each begun only while time
   for it is left.
5. **collect**: into ``$OUT`` (or ``--out``): ``gpu_run.json`` (this run's record: phases,
   exit statuses, wall times, what was installed, the accuracies), ``metrics.json`` (the
   run's), ``evaluation.json`` and ``gpu_run.tar.gz`` (everything small: profile, run.json,
   each stage's history.csv and summary.json, figures, evaluation metrics, environment,
   nvidia-smi output, logs); 4 files, each checked against the 16 MiB a file may take.

Whatever fails or runs out of time, the files of steps 4 and 5 are still written; the exit
status is 0 only when training completed and the report succeeded.

``--dry-run`` checks the same path on a CPU in a minute or two: a tiny profile (the smoke
profile at 32x32 on 80 synthetic images, the tests' ``tiny_profile``) written to
``WORK/gpu-dry-run.yaml``, the synthetic data, no GPU required. ``--profile``/``--data``
override either mode's choice (``--data synthetic`` for the profile's synthetic data).
``--resume`` continues the run left in ``WORK/run`` by an earlier call on a still-warm
machine instead of starting afresh.

Usage: bash gpu/run.sh [--dry-run] [--profile NAME|YAML] [--data PATH|synthetic]
       [--stages all] [--budget 570] [--reserve 80] [--out DIR] [--work DIR] [--kit DIR]
       [--evaluate stage4,stage3,lhcc] [--split val] [--tta flip] [--resume]
"""

from __future__ import annotations

import argparse
import io
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tarfile
import tempfile
import threading
import time
import zipfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DEFAULT_KIT = REPO / ".gpu-kit"
WHEELS_ARCHIVE = "wheels.tar.xz"
PACK_FILE = "fer2013.lhcpack"
DEFAULT_BUDGET = 570.0     # seconds: the machine allows 600 per command
DEFAULT_RESERVE = 80.0     # seconds of the budget kept after training: report and collect
COLLECT_SECONDS = 15.0     # of the reserve, kept for collecting after the report
KILL_GRACE = 20.0          # seconds between the first SIGINT and SIGKILL
SIGINT_INTERVAL = 10.0     # seconds between SIGINTs until then (exiting takes a few)
MAX_FILE_BYTES = 16 * 2**20  # what one file from $OUT may take
MAX_FILES = 8
DRY_RUN_PROFILE = "gpu-dry-run.yaml"
SYNTHETIC = "synthetic"
WORK_ENTRIES = ("run", "results", "site", "wheels", DRY_RUN_PROFILE)  # what WORK holds
RESULT_FILES = ("gpu_run.json", "metrics.json", "evaluation.json", "gpu_run.tar.gz")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="gpu/run.sh", description="The GPU run of issue 17 as one command (gpu/run.py).",
        epilog="Device: bash gpu/run.sh (carry [\".gpu-kit\"], timeout_s 600). CPU check: "
               "OUT=/tmp/out bash gpu/run.sh --dry-run.")
    parser.add_argument("--dry-run", action="store_true",
                        help="tiny profile, synthetic data, no GPU required: the CPU check")
    parser.add_argument("--profile", help="profile name or YAML (default gpu; dry run: tiny)")
    parser.add_argument("--data", help="FER2013 source, or 'synthetic' (default "
                                       ".gpu-kit/fer2013.lhcpack; dry run: synthetic)")
    parser.add_argument("--stages", default="all", help="lhc train --stages (default all)")
    parser.add_argument("--budget", type=float, default=DEFAULT_BUDGET,
                        help="seconds for everything, from this script's start (default 570)")
    parser.add_argument("--reserve", type=float, default=DEFAULT_RESERVE,
                        help="seconds of the budget kept after training for the evaluation "
                             "and the results (default 80)")
    parser.add_argument("--out", help="results folder (default $OUT)")
    parser.add_argument("--work", help="run folder, site and logs (default $TMPDIR/lhc-gpu-run)")
    parser.add_argument("--kit", default=str(DEFAULT_KIT), help="the kit (default .gpu-kit)")
    parser.add_argument("--evaluate", default="stage4,stage3,lhcc",
                        help="stages to evaluate after training, in order (empty: none)")
    parser.add_argument("--split", default="val", choices=("val", "test"),
                        help="evaluation split (default val: PublicTest)")
    parser.add_argument("--tta", default="flip", choices=("none", "flip", "paper", "reference"))
    parser.add_argument("--resume", action="store_true",
                        help="continue the run an earlier call left in WORK/run")
    return parser


def parse_args(argv: list[str] | None = None, environ=os.environ) -> argparse.Namespace:
    """Parse and resolve the options: profile, data, out and work get their mode's defaults."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.budget <= 0 or args.reserve < COLLECT_SECONDS or args.reserve >= args.budget:
        parser.error(f"--budget {args.budget:g} and --reserve {args.reserve:g}: need a budget "
                     f"above the reserve, and a reserve of at least {COLLECT_SECONDS:g} s")
    out = args.out or environ.get("OUT")
    if not out:
        parser.error("no results folder: set OUT or pass --out")
    args.out = Path(out)
    args.work = Path(args.work or Path(environ.get("TMPDIR") or tempfile.gettempdir())
                     / "lhc-gpu-run")
    args.kit = Path(args.kit)
    if args.work.resolve() == args.out.resolve() or args.out.resolve() in args.work.resolve().parents:
        parser.error(f"--work {args.work} must lie outside the results folder {args.out}")
    if args.data is None:
        args.data = SYNTHETIC if args.dry_run else str(args.kit / PACK_FILE)
    if args.profile is None:
        args.profile = str(args.work / DRY_RUN_PROFILE) if args.dry_run else "gpu"
    args.evaluate = [stage for stage in args.evaluate.split(",") if stage]
    args.require_gpu = not args.dry_run
    return args


def write_dry_run_profile(path: Path) -> Path:
    """The smoke profile shrunk as ``tests/conftest.py``'s ``tiny_profile``: 80 synthetic images
    at 32x32, stage 1 in batches of 16; every stage and LHC-NetC still run."""
    import yaml

    profile = yaml.safe_load((REPO / "lhc" / "profiles" / "smoke.yaml").read_text())
    profile["name"] = "gpu-dry-run"
    profile["input_size"] = 32
    profile["data"]["n"] = 80
    profile["stages"]["stage1"]["batch_size"] = 16
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("# gpu/run.py --dry-run: the smoke profile at 32x32 on 80 images\n"
                    + yaml.safe_dump(profile, sort_keys=False))
    return path


# --- install -------------------------------------------------------------------------------

def _normalise(name: str) -> str:
    return re.sub(r"[-_.]+", "_", name).lower()


def _installed_version(name: str) -> str | None:
    import importlib.metadata

    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return None


def wheel_fits_python(filename: str, version_info=sys.version_info) -> bool:
    """Whether a wheel's Python tag admits this interpreter (``py3``, ``cp312``, ``py2.py3``)."""
    python_tag = filename[:-len(".whl")].split("-")[-3]
    here = {f"py{version_info[0]}", f"py{version_info[0]}{version_info[1]}",
            f"cp{version_info[0]}{version_info[1]}"}
    return any(tag in here for tag in python_tag.split("."))


def unpack_wheel(wheel: Path, site: Path) -> None:
    """Lay out a wheel in ``site`` as ``pip install --target`` does for its importable files:
    everything at the top, ``NAME.data/purelib`` and ``NAME.data/platlib`` merged into it,
    other ``.data`` parts (scripts, headers) left out."""
    with zipfile.ZipFile(wheel) as archive:
        for info in archive.infolist():
            name = info.filename
            parts = name.split("/")
            if parts[0].endswith(".data"):
                if len(parts) < 3 or parts[1] not in ("purelib", "platlib"):
                    continue
                name = "/".join(parts[2:])
            if not name or name.endswith("/"):
                continue
            target = site / name
            if ".." in Path(name).parts or Path(name).is_absolute():
                raise ValueError(f"{wheel}: unsafe member {info.filename!r}")
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(archive.read(info))


def install_kit_wheels(kit: Path, work: Path, site: Path) -> dict:
    """Unpack the kit's wheels into ``site``; return what was installed and what left out."""
    record: dict = {"installed": [], "skipped": {}}
    archive_path = kit / WHEELS_ARCHIVE
    if not archive_path.exists():
        record["error"] = f"{archive_path}: no such file (run make gpu-kit)"
        return record
    wheels_dir = work / "wheels"
    wheels_dir.mkdir(parents=True, exist_ok=True)
    with tarfile.open(archive_path, "r:xz") as archive:
        for member in archive.getmembers():
            if not member.isfile() or "/" in member.name or not member.name.endswith(".whl"):
                raise ValueError(f"{archive_path}: unexpected member {member.name!r}")
            (wheels_dir / member.name).write_bytes(archive.extractfile(member).read())
    for wheel in sorted(wheels_dir.glob("*.whl")):
        name, version = wheel.name.split("-")[:2]
        present = _installed_version(name)
        if present is not None and _normalise(present) == _normalise(version):
            record["skipped"][wheel.name] = f"{name} {present} is installed here"
        elif not wheel_fits_python(wheel.name):
            record["skipped"][wheel.name] = (f"not for Python {sys.version_info[0]}."
                                             f"{sys.version_info[1]}")
        else:
            unpack_wheel(wheel, site)
            record["installed"].append(wheel.name)
    return record


def child_environment(site: Path, environ=os.environ) -> dict[str, str]:
    """The children's environment: the kit's site and the repository first on the path."""
    env = dict(environ)
    paths = [str(site), str(REPO)] + ([env["PYTHONPATH"]] if env.get("PYTHONPATH") else [])
    env.update(PYTHONPATH=os.pathsep.join(paths), KERAS_BACKEND="jax", PYTHONUNBUFFERED="1",
               MPLBACKEND="Agg", TF_CPP_MIN_LOG_LEVEL="2")
    return env


# --- children ------------------------------------------------------------------------------

def run_child(command: list[str], log: Path, env: dict, deadline: float | None = None,
              grace: float = KILL_GRACE) -> dict:
    """Run ``command``, its output shown and written to ``log``; interrupt it at ``deadline``
    (Unix time) with SIGINT, repeated every :data:`SIGINT_INTERVAL` seconds, and kill it
    ``grace`` seconds later."""
    log.parent.mkdir(parents=True, exist_ok=True)
    start = time.time()
    with open(log, "wb") as handle:
        handle.write(("$ " + " ".join(command) + "\n").encode())
        try:
            process = subprocess.Popen(command, cwd=REPO, env=env, stdout=subprocess.PIPE,
                                       stderr=subprocess.STDOUT, start_new_session=True)
        except OSError as error:
            handle.write(f"{error}\n".encode())
            return {"command": command, "rc": None, "error": str(error), "seconds": 0.0,
                    "timed_out": False}

        def copy():
            for line in iter(process.stdout.readline, b""):
                handle.write(line)
                handle.flush()
                sys.stdout.buffer.write(line)
                sys.stdout.flush()

        reader = threading.Thread(target=copy, daemon=True)
        reader.start()
        timed_out = False
        try:
            process.wait(None if deadline is None else max(deadline - time.time(), 0.0))
        except subprocess.TimeoutExpired:
            timed_out = True
            print(f"gpu/run.py: {' '.join(command[1:4])}: out of time, interrupting (SIGINT)",
                  flush=True)
            # Again every few seconds: Keras swallows an interrupt that lands in one of its
            # bare excepts (while a model is built, say), as seen here once.
            kill_at = time.time() + grace
            while process.poll() is None and time.time() < kill_at:
                _signal_group(process, signal.SIGINT)
                try:
                    process.wait(min(SIGINT_INTERVAL, max(kill_at - time.time(), 0.0)))
                except subprocess.TimeoutExpired:
                    pass
            if process.poll() is None:
                _signal_group(process, signal.SIGKILL)
                process.wait()
        reader.join(5)
    return {"command": command, "rc": process.returncode, "timed_out": timed_out,
            "seconds": round(time.time() - start, 1)}


def _signal_group(process: subprocess.Popen, sig: int) -> None:
    try:
        os.killpg(process.pid, sig)
    except (ProcessLookupError, PermissionError):
        pass


def nvidia_smi(out: Path) -> bool:
    """Write ``nvidia-smi`` and ``nvidia-smi -q`` to ``out``; False where there is none."""
    if shutil.which("nvidia-smi") is None:
        out.write_text("nvidia-smi: not found on this machine\n")
        return False
    parts = []
    for command in (["nvidia-smi"], ["nvidia-smi", "-q"]):
        try:
            done = subprocess.run(command, capture_output=True, text=True, timeout=30)
            parts.append(f"$ {' '.join(command)}\n{done.stdout}{done.stderr}")
        except (OSError, subprocess.TimeoutExpired) as error:
            parts.append(f"$ {' '.join(command)}\n{error}\n")
    out.write_text("\n".join(parts))
    return True


# --- collect -------------------------------------------------------------------------------

# Patterns (relative to the run folder) of what travels back from it: the small text files.
RUN_FILES = ("profile.yaml", "run.json", "metrics.json", "stages/*/*/history.csv",
             "stages/*/*/summary.json")


def result_members(run_dir: Path, results: Path) -> list[tuple[Path, str]]:
    """(file, name in the archive) of everything the archive takes, text before figures."""
    members = []
    for pattern in RUN_FILES:
        members += [(path, f"run/{path.relative_to(run_dir).as_posix()}")
                    for path in sorted(run_dir.glob(pattern)) if path.is_file()]
    if results.is_dir():
        members += [(path, path.relative_to(results).as_posix())
                    for path in sorted(results.rglob("*"))
                    if path.is_file() and path.suffix != ".svg"]
    return members


def write_archive(members: list[tuple[Path, str]], out: Path,
                  max_bytes: int = MAX_FILE_BYTES) -> list[str]:
    """Write ``members`` as a gzipped tar under ``gpu_run/``; drop the largest figures, then
    the largest others, until it takes at most ``max_bytes``. Return what was left out."""
    left_out: list[str] = []
    members = list(members)
    while True:
        buffer = io.BytesIO()
        with tarfile.open(fileobj=buffer, mode="w:gz") as archive:
            for path, name in members:
                archive.add(path, arcname=f"gpu_run/{name}")
        if len(buffer.getvalue()) <= max_bytes or not members:
            out.write_bytes(buffer.getvalue())
            return left_out
        figures = [member for member in members if member[0].suffix == ".png"]
        largest = max(figures or members, key=lambda member: member[0].stat().st_size)
        members.remove(largest)
        left_out.append(largest[1])


def collect(run_dir: Path, results: Path, out: Path, record: dict,
            max_bytes: int = MAX_FILE_BYTES) -> list[str]:
    """Write the result files (module docstring, step 5) into ``out``; return their names."""
    out.mkdir(parents=True, exist_ok=True)
    for name in RESULT_FILES:  # an earlier run's, where OUT was not emptied
        (out / name).unlink(missing_ok=True)
    written = []
    metrics = run_dir / "metrics.json"
    if metrics.exists() and metrics.stat().st_size <= max_bytes:
        shutil.copyfile(metrics, out / "metrics.json")
        written.append("metrics.json")
    evaluation = results / "evaluation.json"
    if evaluation.exists() and evaluation.stat().st_size <= max_bytes:
        shutil.copyfile(evaluation, out / "evaluation.json")
        written.append("evaluation.json")
    record["archive_left_out"] = write_archive(result_members(run_dir, results),
                                               out / "gpu_run.tar.gz", max_bytes)
    written.append("gpu_run.tar.gz")
    written.append("gpu_run.json")
    record["files"] = sorted(written)
    (out / "gpu_run.json").write_text(json.dumps(record, indent=2, default=str) + "\n")
    return record["files"]


def accuracies(run_dir: Path, results: Path) -> dict:
    """Per stage: the validation accuracy training logged, and the evaluation's, if any."""
    table: dict = {}
    try:
        metrics = json.loads((run_dir / "metrics.json").read_text())
        for stage, models in metrics.get("stages", {}).items():
            for model, row in models.items():
                table[stage] = {"model": model, "epochs": row.get("epochs_run"),
                                "val_accuracy_training": row.get("val_accuracy"),
                                "train_loss": row.get("train_loss"),
                                "wall_seconds": row.get("wall_seconds")}
        table["status"] = metrics.get("status")
        if "acceptance" in metrics:
            table["acceptance"] = metrics["acceptance"]
    except (OSError, ValueError):
        table["status"] = "no metrics.json"
    try:
        evaluation = json.loads((results / "evaluation.json").read_text())
        for stage, row in evaluation.get("stages", {}).items():
            table.setdefault(stage, {}).update(
                {key: row.get(key) for key in ("accuracy_without_tta", "accuracy_with_tta")})
    except (OSError, ValueError):
        pass
    return table


# --- main ----------------------------------------------------------------------------------

def main(argv: list[str] | None = None) -> int:
    start = time.time()
    args = parse_args(argv)
    deadline = start + args.budget
    run_dir, results, site = args.work / "run", args.work / "results", args.work / "site"
    resume = args.resume and (run_dir / "run.json").exists()
    # A fresh start: what an earlier call left in WORK goes (the run too, unless resumed);
    # only this script's own entries are touched, whatever folder --work names.
    for name in WORK_ENTRIES:
        entry = args.work / name
        if resume and name == "run" or not (entry.exists() or entry.is_symlink()):
            continue
        if entry.is_dir() and not entry.is_symlink():
            shutil.rmtree(entry)
        else:
            entry.unlink()
    results.mkdir(parents=True, exist_ok=True)
    logs = results / "logs"
    if args.dry_run and args.profile == str(args.work / DRY_RUN_PROFILE):
        write_dry_run_profile(Path(args.profile))
    record: dict = {
        "issue": 17, "mode": "dry-run" if args.dry_run else "device",
        "argv": sys.argv[1:] if argv is None else argv, "python": sys.executable,
        "profile": args.profile, "data": args.data, "stages": args.stages,
        "budget_s": args.budget, "reserve_s": args.reserve,
        "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(start)),
        "work": str(args.work), "resumed": resume, "phases": {},
    }
    status = "failed"
    print(f"gpu/run.py: {record['mode']} run, profile {args.profile}, data {args.data}, budget "
          f"{args.budget:.0f} s, results to {args.out}", flush=True)
    try:
        if args.data != SYNTHETIC and not Path(args.data).exists():
            raise RuntimeError(f"{args.data}: no such data (make gpu-kit writes "
                               f"{args.kit / PACK_FILE}; carry .gpu-kit)")
        phase_start = time.time()
        record["phases"]["install"] = install_kit_wheels(args.kit, args.work, site)
        record["phases"]["install"]["seconds"] = round(time.time() - phase_start, 1)
        if "error" in record["phases"]["install"]:
            print(f"gpu/run.py: note: {record['phases']['install']['error']}", flush=True)
        env = child_environment(site)
        python = sys.executable
        environment = [python, "gpu/steps.py", "environment", str(results / "environment.json")]
        record["phases"]["environment"] = run_child(
            environment + (["--require-gpu"] if args.require_gpu else []),
            logs / "environment.log", env, deadline=min(deadline, time.time() + 180))
        record["nvidia_smi"] = nvidia_smi(results / "nvidia-smi.txt")
        if record["phases"]["environment"]["rc"] != 0:
            raise RuntimeError("the environment check failed (logs/environment.log): "
                               "not training")
        if resume:
            train = [python, "-m", "lhc.cli", "train", "--resume", str(run_dir), "--verbose", "2"]
        else:
            train = [python, "-m", "lhc.cli", "train", "--profile", args.profile,
                     *(["--data", args.data] if args.data != SYNTHETIC else []),
                     "--out", str(run_dir), "--stages", args.stages, "--verbose", "2"]
        record["phases"]["train"] = run_child(train, logs / "train.log", env,
                                              deadline=deadline - args.reserve)
        record["phases"]["train"]["deadline_s"] = round(args.budget - args.reserve, 1)
        report = [python, "gpu/steps.py", "report", str(run_dir), str(results),
                  "--evaluate", ",".join(args.evaluate), "--split", args.split,
                  "--tta", args.tta, "--deadline", f"{deadline - COLLECT_SECONDS:.1f}"]
        record["phases"]["report"] = run_child(report, logs / "report.log", env,
                                               deadline=deadline - COLLECT_SECONDS)
        training_status = accuracies(run_dir, results).get("status")
        report_ok = record["phases"].get("report", {}).get("rc") == 0
        status = "complete" if training_status == "complete" and report_ok else "incomplete"
    except Exception as error:  # noqa: BLE001  (whatever happened, the results get written)
        record["error"] = f"{type(error).__name__}: {error}"
        print(f"gpu/run.py: error: {record['error']}", file=sys.stderr, flush=True)
    record["status"] = status
    record["accuracies"] = accuracies(run_dir, results)
    record["wall_seconds"] = round(time.time() - start, 1)
    files = collect(run_dir, results, args.out, record)
    print(f"gpu/run.py: {status} in {record['wall_seconds']:.0f} s; {len(files)} files in "
          f"{args.out}: {', '.join(files)}")
    print(json.dumps(record["accuracies"], indent=1, default=str))
    return 0 if status == "complete" else 1


if __name__ == "__main__":
    sys.exit(main())
