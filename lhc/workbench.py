"""The notebook sequence run headless: every numbered notebook of ``notebooks/``, in order, by papermill.

The notebooks share one run directory: each reads what the earlier ones wrote there (data
report, trained stages, figures). :func:`run_sequence` executes them into
``RUN_DIR/notebooks/``, passing each only the parameters its ``parameters`` cell declares,
prints one progress line per notebook and stops at the first failure, naming the notebook
and the cell and keeping the partially executed notebook for inspection. The kernels run in
the current directory (relative paths resolve as on the command line) and write their stderr
(TensorFlow's C++ log lines) to ``RUN_DIR/notebooks/kernels.log``. Each run also records, in
``RUN_DIR/workbench.json``, the notebooks run with their wall times and the versions and
hardware they ran on, for the report (:mod:`lhc.run_report`).

One ``lhc run`` writes a run directory at a time (:mod:`lhc.training.run_lock`; its kernels
train under the same lock). An interrupt (Ctrl-C) stops the running kernel, records the
notebook as "interrupted" and raises :class:`SequenceInterrupted`; the next run of that
notebook keeps the interrupted one's partial notebook beside it
(``NN_name.interrupted-1.ipynb``) instead of overwriting it.
"""

from __future__ import annotations

import contextlib
import importlib.metadata
import json
import logging
import os
import platform
import re
import signal
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from lhc._io import write_json
from lhc.training.layout import RunLayout
from lhc.training.run_lock import run_lock

NOTEBOOKS_DIR = Path(__file__).resolve().parents[1] / "notebooks"
MANIFEST_FILE = "workbench.json"  # in the run directory
KERNEL_OPTION_NO_FD_CAPTURE = "--IPKernelApp.capture_fd_output=False"
KERNEL_LOG = "kernels.log"  # in RUN_DIR/notebooks: what the kernels wrote to stderr
# "01_data.ipynb" -> key "01"; "05b_head_correlation.ipynb" -> key "05b".
_NOTEBOOK_NAME = re.compile(r"^(?P<key>\d\d[a-z]?)_\w+\.ipynb$")
VERSIONED_PACKAGES = ("tensorflow", "keras", "numpy", "lhc-workbench", "papermill", "matplotlib")

__all__ = ["NotebookFailed", "SequenceInterrupted", "environment_summary", "execute_notebook", "notebook_sequence",
           "read_manifest", "refresh_outputs", "run_sequence", "select_notebooks"]


class NotebookFailed(RuntimeError):
    """A notebook of the sequence raised; the message names the notebook, the cell and the error.

    Attributes:
        notebook: the source notebook's name.
        output: the partially executed notebook, kept for inspection.
    """

    def __init__(self, message: str, notebook: str, output: Path):
        super().__init__(message)
        self.notebook = notebook
        self.output = output


class SequenceInterrupted(KeyboardInterrupt):
    """The sequence was interrupted (Ctrl-C) while a notebook ran; its kernel was stopped.

    Attributes:
        notebook: the interrupted notebook's name; ``key`` its key (``"02"``).
        output: its partially executed copy, kept.
        training: ``(stage, model, epochs checkpointed)`` of the stages it left unfinished.
    """

    def __init__(self, notebook: Path, output: Path, training: list[tuple[str, str, int]]):
        self.notebook, self.key, self.output, self.training = notebook.stem, _key(notebook), \
            output, training
        after = "".join(f" after epoch {epoch} of {stage} ({model})"
                        for stage, model, epoch in training[-1:])
        super().__init__(f"interrupted in {notebook.stem}{after}; partial notebook kept: {output}")


def notebook_sequence(notebooks_dir: str | os.PathLike = NOTEBOOKS_DIR) -> list[Path]:
    """The numbered notebooks (``NN_name.ipynb``, ``NNb_name.ipynb``) of a folder, in run order.

    Raises:
        FileNotFoundError: the folder does not exist or holds no numbered notebook.
    """
    notebooks_dir = Path(notebooks_dir)
    if not notebooks_dir.is_dir():
        raise FileNotFoundError(f"{notebooks_dir}: no notebooks folder (the sequence runs from a "
                                "clone of the repository, where notebooks/ sits beside lhc/)")
    found = sorted(path for path in notebooks_dir.glob("*.ipynb") if _NOTEBOOK_NAME.match(path.name))
    if not found:
        raise FileNotFoundError(f"{notebooks_dir}: no numbered notebook (NN_name.ipynb)")
    return found


def _key(notebook: Path) -> str:
    return _NOTEBOOK_NAME.match(notebook.name)["key"]


def _matches(notebook: Path, selector: str) -> bool:
    """``05`` selects 05_ablation and 05b_head_correlation; ``05b`` or a full stem only that one."""
    key = _key(notebook)
    return selector in (key, notebook.stem) or (key[:2] == selector and len(key) == 3)


def select_notebooks(notebooks: Sequence[Path], only: str | Sequence[str] | None = None,
                     start: str | None = None) -> list[Path]:
    """The notebooks a run executes: those named by ``only``, or all from ``start`` on.

    Args:
        notebooks: the sequence, in order (:func:`notebook_sequence`).
        only: keys such as ``"04,05"`` (a comma-separated string or a list); ``05`` also
            selects ``05b``.
        start: the key of the first notebook to run (``"03"``); the earlier ones are skipped.

    Returns:
        The selected notebooks, in sequence order.

    Raises:
        ValueError: a key names no notebook, or ``only`` and ``start`` are both given.
    """
    if only is not None and start is not None:
        raise ValueError("give either only or start (from), not both")
    available = ", ".join(_key(path) for path in notebooks)
    if only is not None:
        selectors = [part.strip() for part in (only.split(",") if isinstance(only, str) else only)
                     if part.strip()]
        for selector in selectors:
            if not any(_matches(path, selector) for path in notebooks):
                raise ValueError(f"only: no notebook {selector!r}; the sequence has {available}")
        return [path for path in notebooks if any(_matches(path, s) for s in selectors)]
    if start is not None:
        first = next((index for index, path in enumerate(notebooks) if _matches(path, start)), None)
        if first is None:
            raise ValueError(f"from: no notebook {start!r}; the sequence has {available}")
        return list(notebooks[first:])
    return list(notebooks)


def execute_notebook(notebook: str | os.PathLike, output: str | os.PathLike,
                     parameters: dict[str, Any], cwd: str | os.PathLike | None = None,
                     declared: Mapping[str, Any] | None = None) -> dict:
    """Execute one notebook with papermill, injecting those of ``parameters`` it declares.

    The output notebook is written under a temporary name while it runs and renamed into
    place when it finishes or fails, so ``output`` is never a half-written file, and a
    failed notebook is kept there with its error.

    Args:
        notebook: the source notebook.
        output: where the executed notebook goes.
        parameters: candidate parameters; only the names of the notebook's ``parameters``
            cell are injected (papermill's ``inspect_notebook``), the rest are ignored.
        cwd: the kernel's working directory; default the repository root (the parent of
            the notebook's folder), where the notebooks' relative defaults point.
        declared: the notebook's parameters as ``papermill.inspect_notebook`` gives them,
            when the caller has already read them; default: read here.

    Returns:
        The parameters injected.

    Raises:
        papermill.PapermillExecutionError: a cell raised (its index, source, ename, evalue).
    """
    import papermill

    notebook, output = Path(notebook), Path(output)
    if declared is None:
        declared = papermill.inspect_notebook(str(notebook))
    if "run_dir" in parameters and "run_dir" not in declared:
        # Without it the notebook would silently read and write its default run directory.
        raise ValueError(f"{notebook}: its parameters cell declares no run_dir (or papermill "
                         f"cannot parse that line); declared: {sorted(declared)}")
    injected = {name: value for name, value in parameters.items() if name in declared}
    output.parent.mkdir(parents=True, exist_ok=True)
    running = output.with_name(f".{output.stem}.running{output.suffix}")
    try:
        # Kernel python3 is always the interpreter running this code (jupyter_client maps it
        # to sys.executable), so the notebooks see the same environment as `lhc run`. What
        # C++ code writes to file descriptor 2 (TensorFlow's start-up lines) stays on the
        # kernel's stderr instead of entering the notebook's outputs.
        papermill.execute_notebook(str(notebook), str(running), parameters=injected,
                                   kernel_name="python3", progress_bar=False, log_output=False,
                                   cwd=str(cwd or notebook.resolve().parents[1]),
                                   extra_arguments=[KERNEL_OPTION_NO_FD_CAPTURE])
    finally:
        if running.exists():
            # Cosmetic: a notebook papermill left unreadable is kept as it is.
            with contextlib.suppress(ValueError, OSError):
                save_as_jupyter_does(running)
            os.replace(running, output)
    return injected


def save_as_jupyter_does(path: Path, strip_run_record: bool = False) -> None:
    """Rewrite a notebook file in the form JupyterLab saves it in, so that opening and saving
    it there changes nothing.

    JupyterLab's server writes ``nbformat.write``'s JSON (indent 1, sorted keys) and a final
    newline; papermill writes the same JSON without the newline. ``strip_run_record`` also
    drops papermill's record of the execution (paths, times) from the notebook's and each
    cell's metadata, for the committed notebooks, whose diffs should show only what changed.
    """
    import nbformat

    notebook = nbformat.read(path, as_version=nbformat.NO_CONVERT)
    if strip_run_record:
        notebook.metadata.pop("papermill", None)
        for cell in notebook.cells:
            cell.metadata.pop("papermill", None)
            cell.metadata.pop("execution", None)
    with open(path, "w", encoding="utf-8") as handle:
        nbformat.write(notebook, handle, version=nbformat.NO_CONVERT)


def _failure(notebook: Path, output: Path, kernel_log: Path | None,
             error: BaseException) -> BaseException:
    """The error to raise when ``notebook`` failed: a :class:`NotebookFailed` naming the cell.

    An interrupt (Ctrl-C) is returned unchanged.
    """
    from papermill.exceptions import PapermillExecutionError

    where = f"partially executed notebook kept: {output}"
    if kernel_log is not None:
        where += f"; kernel log: {kernel_log}"
    if isinstance(error, PapermillExecutionError):
        # Name the cell as Jupyter shows it (In [5]) and by its first line of code.
        source_lines = [line for line in error.source.splitlines() if line.strip()]
        first_line = source_lines[0] if source_lines else ""
        return NotebookFailed(f"{notebook.name} failed in cell In [{error.exec_count}] "
                              f"(`{first_line}`): {error.ename}: {error.evalue}\n{where}",
                              notebook.stem, output)
    if isinstance(error, Exception):  # e.g. the kernel died (out of memory)
        return NotebookFailed(f"{notebook.name} failed: {type(error).__name__}: {error}\n{where}",
                              notebook.stem, output)
    return error


def run_sequence(profile: str = "smoke", data_path: str | os.PathLike | None = None,
                 out: str | os.PathLike | None = None, only: str | Sequence[str] | None = None,
                 start: str | None = None, images: bool = True,
                 parameters: dict[str, Any] | None = None,
                 notebooks_dir: str | os.PathLike = NOTEBOOKS_DIR,
                 log: Callable[[str], None] = print) -> list[dict]:
    """Execute the notebook sequence into ``out/notebooks/`` (the ``lhc run`` command).

    Args:
        profile: the training profile: ``smoke``, ``cpu``, ``paper`` or a YAML path.
        data_path: a FER2013 source; None: the notebooks' synthetic default.
        out: the shared run directory; default ``runs/<profile>`` (a YAML file's stem).
        only: run only these notebooks (:func:`select_notebooks`).
        start: run from this notebook on.
        images: False passes ``show_images=False`` and ``images=False``: no figure of faces
            is drawn or reported.
        parameters: further parameters (e.g. ``{"seed": 1}``), given to the notebooks that
            declare them; they override the ones above. A name that no selected notebook
            declares is an error rather than ignored (a typo would otherwise do nothing).
        notebooks_dir: the folder of the sequence.
        log: receives the progress lines.

    Returns:
        One record per notebook run: name, seconds, status and the parameters injected.

    Raises:
        NotebookFailed: a notebook raised; the sequence stopped there.
        SequenceInterrupted: an interrupt (Ctrl-C); the notebook's kernel was stopped.
        lhc.training.run_lock.RunLocked: another process writes the run directory.
        ValueError: unknown profile or notebook key, or a parameter no selected notebook
            declares.
    """
    import papermill

    from lhc.training.profiles import available_profiles

    # The training notebooks validate the profile's contents; checking that it exists here
    # keeps TensorFlow (which full validation imports) out of this process.
    if str(profile) not in available_profiles() and not Path(profile).is_file():
        raise ValueError(f"profile {str(profile)!r}: neither a shipped profile "
                         f"({', '.join(available_profiles())}) nor a YAML file")
    run_dir = Path(out or Path("runs") / Path(profile).stem).resolve()
    selected = select_notebooks(notebook_sequence(notebooks_dir), only, start)
    # Read once: the check below and each notebook's injection both use it.
    declared = {notebook: papermill.inspect_notebook(str(notebook)) for notebook in selected}
    known = set().union(*declared.values())
    unknown = sorted(set(parameters or {}) - known)
    if unknown:
        raise ValueError(f"parameter(s) {', '.join(unknown)} declared by none of "
                         f"{', '.join(notebook.stem for notebook in selected)}; they declare: "
                         f"{', '.join(sorted(known))}")
    candidates = {"run_dir": str(run_dir), "profile": str(profile),
                  "data_path": str(Path(data_path).resolve()) if data_path else "",
                  "show_images": images, "images": images, **(parameters or {})}
    with run_lock(run_dir, "lhc run"):
        return _run_locked(run_dir, selected, declared, candidates, profile, images, log)


def _run_locked(run_dir: Path, selected: list[Path], declared: dict, candidates: dict,
                profile, images: bool, log: Callable[[str], None]) -> list[dict]:
    """:func:`run_sequence`'s loop, with the run directory's lock held."""
    # Notebooks run by earlier calls (``--from 04`` after a fix) keep their records.
    records = {record["notebook"]: record for record in read_manifest(run_dir)["notebooks"]}
    manifest = {"started": datetime.now(UTC).isoformat(timespec="seconds"),
                "profile": str(profile), "data_path": candidates["data_path"], "images": images,
                "environment": environment_summary(), "status": "running"}

    def save(record: dict) -> None:
        records[record["notebook"]] = record
        write_json(run_dir / MANIFEST_FILE, {**manifest, "notebooks": sorted(
            records.values(), key=lambda r: r["notebook"])})

    log(f"{run_dir}: {len(selected)} notebooks, profile {profile}, "
        f"data {candidates['data_path'] or 'synthetic'}")
    sequence_start = time.perf_counter()
    ran = []
    kernel_log = run_dir / "notebooks" / KERNEL_LOG
    for position, notebook in enumerate(selected, 1):
        output = run_dir / "notebooks" / notebook.name
        if records.get(notebook.stem, {}).get("status") == "interrupted" and output.exists():
            kept = _keep_interrupted(output)
            log(f"the interrupted run's partial {output.name} is kept as {kept.name}")
        log(f"[{position}/{len(selected)}] {notebook.stem} ...")
        record = {"notebook": notebook.stem, "status": "running"}
        ran.append(record)
        save(record)
        notebook_start = time.perf_counter()
        try:
            with _stderr_to(kernel_log):
                record["parameters"] = execute_notebook(notebook, output, candidates,
                                                        cwd=Path.cwd(),
                                                        declared=declared[notebook])
        except BaseException as error:
            interrupted = isinstance(error, KeyboardInterrupt)
            if interrupted:
                # Before the lock goes: a kernel left running would go on writing the run.
                _stop_kernels()
                # nbclient's pending task then fails with DeadKernelError, which asyncio would
                # report at exit ("Task exception was never retrieved"): expected, not news.
                logging.getLogger("asyncio").setLevel(logging.CRITICAL)
            manifest["status"] = record["status"] = "interrupted" if interrupted else "failed"
            record["seconds"] = round(time.perf_counter() - notebook_start, 1)
            save(record)
            if interrupted:
                raise SequenceInterrupted(notebook, output,
                                          RunLayout(run_dir).checkpointed()) from None
            raise _failure(notebook, output, kernel_log, error) from None
        record.update(status="done", seconds=round(time.perf_counter() - notebook_start, 1))
        if position == len(selected):
            manifest["status"] = "complete"
        save(record)
        log(f"[{position}/{len(selected)}] {notebook.stem} done in {record['seconds']:.1f} s "
            f"(total {_minutes(time.perf_counter() - sequence_start)})")
    log(f"executed notebooks in {run_dir / 'notebooks'}")
    from lhc.run_report import REPORT_NOTEBOOK, report_folder

    if any(record["notebook"] == REPORT_NOTEBOOK for record in ran):
        # Last, as what a reader opens next: the report notebook's ``out`` or its default.
        out = next((record["parameters"].get("out") for record in ran
                    if record["notebook"] == REPORT_NOTEBOOK), None)
        log(f"report: {report_folder(run_dir, out or None) / 'report.html'}")
    return ran


def _keep_interrupted(output: Path) -> Path:
    """Rename an interrupted run's partial notebook to ``NN_name.interrupted-K.ipynb``.

    The name does not match the sequence's pattern, so reports never read it as a result.
    """
    number = 1
    while (kept := output.with_name(f"{output.stem}.interrupted-{number}{output.suffix}")).exists():
        number += 1
    os.replace(output, kept)
    return kept


def _stop_kernels(timeout: float = 10.0) -> None:
    """Kill this process's Jupyter kernels (Linux: found through /proc) and wait for them.

    An interrupt reaches ``lhc run`` only: papermill starts each kernel in a session of its
    own. nbclient would stop it at exit; by then the lock is released, so stop it now. Every
    file the workbench writes is atomic, so killing a kernel mid-epoch loses that epoch only.
    """
    kernels = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
            command = (stat.parent / "cmdline").read_bytes()
        except OSError:
            continue
        if int(fields[1]) == os.getpid() and b"ipykernel" in command:
            kernels.append(int(stat.parent.name))
    for pid in kernels:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + timeout
    for pid in kernels:
        while time.monotonic() < deadline:
            try:
                state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
            except OSError:
                break
            if state in ("Z", "X"):  # dead; jupyter_client reaps it
                break
            time.sleep(0.05)


def refresh_outputs(notebooks_dir: str | os.PathLike = NOTEBOOKS_DIR,
                    log: Callable[[str], None] = print) -> None:
    """Re-execute the committed notebooks in place, with their defaults, from a fresh run.

    nbval (``tests/test_notebooks_nbval.py``) compares the notebooks' committed outputs with
    a default run of the whole sequence from an empty directory; this makes them exactly
    that. The kernels run in a temporary directory, so the working tree's ``runs/smoke`` is
    neither read nor changed.

    Raises:
        NotebookFailed: a notebook raised; it is kept in place with the error in its outputs.
    """
    with tempfile.TemporaryDirectory(prefix="lhc-refresh-") as workdir:
        kernel_log = Path(workdir) / KERNEL_LOG
        for notebook in notebook_sequence(notebooks_dir):
            log(f"{notebook.name} ...")
            start = time.perf_counter()
            try:
                with _stderr_to(kernel_log):
                    execute_notebook(notebook, notebook, {}, cwd=workdir)
                save_as_jupyter_does(notebook, strip_run_record=True)
            except BaseException as error:
                if kernel_log.exists():  # it goes with the temporary directory
                    log(f"kernel log (end):\n{kernel_log.read_text()[-3000:]}")
                raise _failure(notebook, notebook, None, error) from None
            log(f"{notebook.name} done in {time.perf_counter() - start:.1f} s")


def read_manifest(run_dir: str | os.PathLike) -> dict:
    """The run's ``workbench.json`` (:func:`run_sequence`); an empty record if it has none."""
    path = Path(run_dir) / MANIFEST_FILE
    if not path.exists():
        return {"notebooks": []}
    return json.loads(path.read_text())


@contextlib.contextmanager
def _stderr_to(path: Path) -> Iterator[None]:
    """Send file descriptor 2 (this process's and its kernels') to ``path`` for the block.

    The kernels inherit it: TensorFlow's start-up and C++ log lines, and papermill's notes,
    land in the log instead of between the progress lines.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    sys.stderr.flush()
    saved = os.dup(2)
    try:
        with open(path, "ab") as log:
            os.dup2(log.fileno(), 2)
            yield
    finally:
        sys.stderr.flush()
        os.dup2(saved, 2)
        os.close(saved)


def _minutes(seconds: float) -> str:
    return f"{int(seconds // 60)} min {seconds % 60:04.1f} s"


def environment_summary() -> dict[str, Any]:
    """Versions and hardware of this machine: what a report states a run ran on.

    Returns:
        ``{"python", "packages": {name: version}, "platform", "cpu", "cpu_cores",
        "memory_gib", "gpus"}``; unknown values are None (not every system has /proc).
    """
    packages = {}
    for name in VERSIONED_PACKAGES:
        try:
            packages[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            packages[name] = None
    cpuinfo = _read_proc("/proc/cpuinfo")
    cpu = re.search(r"^model name\s*:\s*(.+)$", cpuinfo, re.MULTILINE)
    meminfo = re.search(r"^MemTotal:\s*(\d+) kB", _read_proc("/proc/meminfo"), re.MULTILINE)
    gpus = [re.search(r"^Model:\s*(.+)$", path.read_text(), re.MULTILINE)
            for path in sorted(Path("/proc/driver/nvidia/gpus").glob("*/information"))]
    return {
        "python": platform.python_version(),
        "packages": packages,
        "platform": platform.platform(),
        "cpu": cpu[1].strip() if cpu else platform.processor() or None,
        "cpu_cores": os.cpu_count(),
        "memory_gib": round(int(meminfo[1]) / 2**20, 1) if meminfo else None,
        "gpus": [match[1].strip() for match in gpus if match],
    }


def _read_proc(path: str) -> str:
    try:
        return Path(path).read_text()
    except OSError:
        return ""
