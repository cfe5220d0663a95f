"""Build ``.gpu-kit/``: what the GPU machine needs beside the repository (issue 17), ``make gpu-kit``.

The GPU machine has Python 3.12, JAX and the scientific stack but no Keras and no network, and
receives the working tree plus up to 8 carried git-ignored paths, 64 MiB in all. The kit is one
such path (carry ``[".gpu-kit"]``) holding:

- ``wheels.tar.xz``: the cp312 manylinux x86_64 wheels of the distributions in
  :data:`KIT_DISTRIBUTIONS` (Keras at the version this environment has, and the two of its
  requirements the machine lacks), each re-zipped without compression and the lot compressed
  with xz: 1.6 MB instead of the wheels' 2.9 MB. ``gpu/run.py`` extracts them and unpacks each
  wheel into a folder on ``PYTHONPATH``; the wheels inside are valid wheels (their RECORD
  hashes are of the files, not of the zip), ``pip install --target`` takes them too.
- ``fer2013.lhcpack``: the real FER2013 as a lossless data pack (:mod:`lhc.data.pack`), about
  47 MB. It is rebuilt only when the source or the pack changed.
- ``manifest.json``: the wheels (name, version, sha256 of the download), the pack (source,
  size, sha256, images) and the sizes.

The downloads are kept in ``build/gpu-kit-wheels/`` (git-ignored), so a second build needs no
network. The builder prints the kit's size, the size of what travels with it (the git-tracked
files and the untracked files git does not ignore, as the machine's copy takes them) and the
total, and fails (exit status 1) when the total exceeds ``--limit-mib`` (60 MiB: the machine
takes 64 MiB, and the tree grows).

Usage: python gpu/make_kit.py [--source ../shared/fer2013/fer2013.csv.gz] [--kit .gpu-kit]
       [--cache build/gpu-kit-wheels] [--limit-mib 60] [--no-data]
"""

from __future__ import annotations

import argparse
import hashlib
import importlib.metadata
import io
import json
import os
import re
import subprocess
import sys
import tarfile
import time
import zipfile
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

# What the GPU machine lacks for ``import keras`` on JAX. Keras 3 requires absl-py, numpy,
# rich, namex, h5py, optree, ml-dtypes and packaging (and rich: markdown-it-py, mdurl,
# pygments; optree: typing-extensions); the machine's image has all of them but keras, namex
# and optree (/work/.library/device/KINDS.md, "Python packages already there", read
# 2026-11-17). gpu/run.py checks every requirement before it trains and names a missing one.
KIT_DISTRIBUTIONS = ("keras", "namex", "optree")
ON_DEVICE_REQUIREMENTS = ("absl-py", "numpy", "rich", "h5py", "ml-dtypes", "packaging",
                          "markdown-it-py", "mdurl", "pygments", "typing-extensions")
PYTHON_VERSION = "3.12"
# The machine's jaxlib 0.11 wheels need glibc >= 2.27 (manylinux_2_27), so a wheel for 2.27 or
# 2.28 runs there too; optree 0.20 publishes cp312 wheels for manylinux_2_27/2_28 only.
PLATFORMS = ("manylinux2014_x86_64", "manylinux_2_17_x86_64", "manylinux_2_27_x86_64",
             "manylinux_2_28_x86_64")
WHEELS_ARCHIVE = "wheels.tar.xz"
PACK_FILE = "fer2013.lhcpack"
MANIFEST = "manifest.json"
KIT_FILES = (WHEELS_ARCHIVE, PACK_FILE, MANIFEST)
DEFAULT_SOURCE = REPO.parent / "shared" / "fer2013" / "fer2013.csv.gz"
DEFAULT_LIMIT_MIB = 60.0
MIB = 2**20


@dataclass(frozen=True)
class SizeReport:
    """Bytes of the kit and of the working tree that travels with it."""

    kit: dict[str, int]        # file (relative to the kit) -> bytes
    tracked: int               # git-tracked files as they are in the working tree
    untracked: int             # untracked files that git does not ignore
    limit: int                 # bytes the kit and tree together may take

    @property
    def kit_bytes(self) -> int:
        return sum(self.kit.values())

    @property
    def tree_bytes(self) -> int:
        return self.tracked + self.untracked

    @property
    def total(self) -> int:
        return self.kit_bytes + self.tree_bytes

    @property
    def fits(self) -> bool:
        return self.total <= self.limit

    def lines(self) -> list[str]:
        rows = [(f"  {name}", size) for name, size in sorted(self.kit.items())]
        rows += [("kit", self.kit_bytes), ("git-tracked files", self.tracked),
                 ("untracked, not ignored", self.untracked), ("total that travels", self.total),
                 ("limit", self.limit)]
        width = max(len(label) for label, _ in rows)
        return [f"{label:<{width}} {size:>12,} bytes {size / MIB:7.2f} MiB" for label, size in rows]

    def to_dict(self) -> dict:
        return {"kit_files": self.kit, "kit_bytes": self.kit_bytes, "tracked_bytes": self.tracked,
                "untracked_bytes": self.untracked, "total_bytes": self.total,
                "limit_bytes": self.limit, "fits": self.fits}


def kit_sizes(kit: Path) -> dict[str, int]:
    """Bytes of every file under ``kit``, by path relative to it."""
    return {path.relative_to(kit).as_posix(): path.stat().st_size
            for path in sorted(kit.rglob("*")) if path.is_file()}


def _git_files(repo: Path, *options: str) -> list[Path]:
    listed = subprocess.run(["git", "ls-files", "-z", *options], cwd=repo, check=True,
                            capture_output=True).stdout.split(b"\0")
    return [repo / os.fsdecode(name) for name in listed if name]


def tree_sizes(repo: Path) -> tuple[int, int]:
    """(tracked, untracked-not-ignored) bytes of ``repo``'s working tree, as the GPU machine's
    copy takes it; a tracked file deleted from the working tree counts nothing."""
    def total(paths: list[Path]) -> int:
        return sum(path.lstat().st_size for path in paths if path.is_file() or path.is_symlink())

    return (total(_git_files(repo)),
            total(_git_files(repo, "--others", "--exclude-standard")))


def size_report(kit: Path, repo: Path, limit_mib: float = DEFAULT_LIMIT_MIB) -> SizeReport:
    tracked, untracked = tree_sizes(repo)
    return SizeReport(kit_sizes(kit), tracked, untracked, int(limit_mib * MIB))


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _normalise(name: str) -> str:
    """A distribution name as wheel file names spell it (PEP 427/503): ``absl-py`` -> ``absl_py``."""
    return re.sub(r"[-_.]+", "_", name).lower()


def wheel_name_version(path: Path) -> tuple[str, str]:
    """(normalised name, version) from a wheel's file name."""
    name, version = path.name.split("-")[:2]
    return _normalise(name), version


def installed_versions(names=KIT_DISTRIBUTIONS) -> dict[str, str]:
    """Each distribution's version in this environment: the versions the kit carries."""
    return {name: importlib.metadata.version(name) for name in names}


def download_wheels(versions: dict[str, str], cache: Path) -> list[Path]:
    """The cp312 manylinux wheel of each ``name==version``, from ``cache`` or downloaded there."""
    cache.mkdir(parents=True, exist_ok=True)
    wheels = []
    for name, version in versions.items():
        def cached(name=name, version=version):
            return sorted(path for path in cache.glob("*.whl")
                          if wheel_name_version(path) == (_normalise(name), version))
        if not cached():
            command = [sys.executable, "-m", "pip", "download", "--quiet", "--no-deps",
                       "--only-binary=:all:", "--python-version", PYTHON_VERSION,
                       *[option for platform in PLATFORMS for option in ("--platform", platform)],
                       "--dest", str(cache), f"{name}=={version}"]
            print(f"downloading {name}=={version} (cp{PYTHON_VERSION.replace('.', '')}, "
                  f"manylinux x86_64)", flush=True)
            subprocess.run(command, check=True)
        found = cached()
        if len(found) != 1:
            raise RuntimeError(f"{cache}: expected one wheel of {name}=={version}, found "
                               f"{[path.name for path in found] or 'none'}")
        wheels.append(found[0])
    return wheels


def stored_wheel(path: Path) -> bytes:
    """The wheel re-zipped without compression (same members, same order, same metadata), so
    that xz compresses its contents instead of deflated bytes."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(path) as source, zipfile.ZipFile(buffer, "w", zipfile.ZIP_STORED) as out:
        for info in source.infolist():
            data = source.read(info)
            info.compress_type = zipfile.ZIP_STORED
            out.writestr(info, data)
    return buffer.getvalue()


def write_wheels_archive(wheels: list[Path], out: Path) -> list[dict]:
    """Write the wheels, stored, into one xz tar at ``out`` (deterministic bytes)."""
    entries = []
    tmp = out.with_name(out.name + ".tmp")
    with tarfile.open(tmp, "w:xz", preset=9) as archive:
        for wheel in sorted(wheels, key=lambda path: path.name):
            data = stored_wheel(wheel)
            info = tarfile.TarInfo(wheel.name)
            info.size, info.mtime, info.mode = len(data), 0, 0o644
            archive.addfile(info, io.BytesIO(data))
            name, version = wheel_name_version(wheel)
            entries.append({"file": wheel.name, "name": name, "version": version,
                            "download_bytes": wheel.stat().st_size,
                            "download_sha256": _sha256(wheel),
                            "stored_sha256": hashlib.sha256(data).hexdigest()})
    os.replace(tmp, out)
    return entries


def ensure_pack(source: Path, pack: Path, previous: dict | None) -> dict:
    """Write ``source`` as a data pack at ``pack`` unless the one there was made from it."""
    stat = source.stat()
    record = {"file": pack.name, "source": str(source), "source_bytes": stat.st_size,
              "source_mtime_ns": stat.st_mtime_ns}
    if (previous and pack.exists()
            and all(previous.get(key) == value for key, value in record.items())
            and previous.get("bytes") == pack.stat().st_size
            and previous.get("sha256") == _sha256(pack)):
        print(f"{pack}: made from {source} as it is now, kept")
        return previous
    from lhc.data.pack import write_pack

    start = time.perf_counter()
    info = write_pack(source, pack)
    print(f"packed {info.num_images:,} images of {source} into {pack}: {info.num_bytes:,} bytes "
          f"in {time.perf_counter() - start:.1f} s", flush=True)
    return {**record, "bytes": info.num_bytes, "sha256": _sha256(pack),
            "num_images": info.num_images}


def build_kit(kit: Path, source: Path | None, cache: Path,
              versions: dict[str, str] | None = None) -> dict:
    """Build the kit at ``kit`` (module docstring); return its manifest."""
    kit.mkdir(parents=True, exist_ok=True)
    for path in sorted(kit.iterdir()):  # the kit is generated: nothing else belongs there
        if path.name not in KIT_FILES:
            print(f"{path}: not part of the kit, removed")
            if path.is_dir() and not path.is_symlink():
                import shutil

                shutil.rmtree(path)
            else:
                path.unlink()
    previous = {}
    if (kit / MANIFEST).exists():
        try:
            previous = json.loads((kit / MANIFEST).read_text())
        except ValueError:
            previous = {}
    versions = versions or installed_versions()
    wheels = write_wheels_archive(download_wheels(versions, cache), kit / WHEELS_ARCHIVE)
    data = None
    if source is not None:
        if not source.exists():
            raise FileNotFoundError(f"{source}: no such FER2013 source (pass --source, or "
                                    "--no-data for a kit without data)")
        data = ensure_pack(source, kit / PACK_FILE, previous.get("data"))
    elif (kit / PACK_FILE).exists():
        (kit / PACK_FILE).unlink()
    manifest = {"created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                "python_version": PYTHON_VERSION, "platforms": list(PLATFORMS),
                "wheels_archive": WHEELS_ARCHIVE, "wheels": wheels,
                "on_device_requirements": list(ON_DEVICE_REQUIREMENTS), "data": data}
    text = json.dumps(manifest, indent=2) + "\n"
    (kit / MANIFEST).write_text(text)
    return manifest


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--source", type=Path, default=DEFAULT_SOURCE,
                        help="FER2013 source to pack (default ../shared/fer2013/fer2013.csv.gz)")
    parser.add_argument("--no-data", action="store_true", help="a kit without the data pack")
    parser.add_argument("--kit", type=Path, default=REPO / ".gpu-kit")
    parser.add_argument("--cache", type=Path, default=REPO / "build" / "gpu-kit-wheels",
                        help="where the downloaded wheels are kept")
    parser.add_argument("--limit-mib", type=float, default=DEFAULT_LIMIT_MIB,
                        help="most MiB the kit and the tree may take together (default 60)")
    args = parser.parse_args(argv)
    try:
        manifest = build_kit(args.kit, None if args.no_data else args.source, args.cache)
    except (FileNotFoundError, RuntimeError, subprocess.CalledProcessError) as error:
        print(f"make_kit: error: {error}", file=sys.stderr)
        return 1
    report = size_report(args.kit, REPO, args.limit_mib)
    print(f"kit {args.kit}: " + ", ".join(f"{wheel['name']} {wheel['version']}"
                                          for wheel in manifest["wheels"]))
    print("\n".join(report.lines()))
    if not report.fits:
        print(f"make_kit: error: the kit and the tree take {report.total / MIB:.2f} MiB, over "
              f"the {args.limit_mib:g} MiB limit: the GPU machine takes 64 MiB in all",
              file=sys.stderr)
        return 1
    print(f"fits: {report.total / MIB:.2f} MiB of {args.limit_mib:g} MiB; on the GPU machine: "
          "run bash gpu/run.sh with carry [\".gpu-kit\"]")
    return 0


if __name__ == "__main__":
    sys.exit(main())
