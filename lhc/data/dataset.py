"""The in-memory FER2013 dataset every reader returns: splits, provenance, errors, carving.

A reader turns a source (a CSV, a folder of CSVs or of images, FER+ votes) into a
:class:`FER2013Data`: one :class:`Split` per split present (``train``, ``val``, ``test``),
each with uint8 images ``(N, 48, 48)``, int64 labels ``(N,)`` and the provenance of every
row (source file and 1-based line as an editor shows it, header = line 1; or the image
file). Rows a reader could not use are listed in ``skipped``; nothing is dropped without
a count.
"""

from __future__ import annotations

import dataclasses
from typing import NamedTuple

import numpy as np

IMAGE_SIZE = 48
FER2013_CLASSES = ("Angry", "Disgust", "Fear", "Happy", "Sad", "Surprise", "Neutral")
SPLITS = ("train", "val", "test")


class DataError(ValueError):
    """Bad input data, located by file and line (1-based, header = line 1) or image path.

    Attributes:
        file: the source file (or image) the problem is in.
        line: the 1-based line number as an editor shows it, or None for a whole file/image.
        expected: what the reader expected there.
        found: what it found instead.
    """

    def __init__(self, file: str, line: int | None, expected: str, found: str):
        self.file, self.line, self.expected, self.found = str(file), line, expected, found
        where = self.file if line is None else f"{self.file}, line {line}"
        super().__init__(f"{where}: expected {expected}; found {found}")

    @property
    def reason(self) -> str:
        """The problem without its location, as listed in ``FER2013Data.skipped``."""
        return f"expected {self.expected}; found {self.found}"


class Skipped(NamedTuple):
    """A row (or image) left out under ``on_error="skip"``, and why."""

    file: str
    line: int | None  # None for an image file
    reason: str


class ErrorPolicy:
    """What a reader does with an invalid row: raise its error, or list it as skipped.

    Args:
        on_error: ``"raise"`` (stop at the first invalid row) or ``"skip"`` (collect it in
            ``skipped`` and go on).
    """

    def __init__(self, on_error: str):
        if on_error not in ("raise", "skip"):
            raise ValueError(f"on_error must be 'raise' or 'skip'; got {on_error!r}")
        self.on_error = on_error
        self.skipped: list[Skipped] = []

    def __call__(self, error: DataError) -> None:
        if self.on_error == "raise":
            raise error
        self.skipped.append(Skipped(error.file, error.line, error.reason))

    def notes(self) -> list[str]:
        """The note that counts the skipped rows, if any."""
        if not self.skipped:
            return []
        return [f"{len(self.skipped)} invalid rows skipped (on_error='skip'), listed in skipped"]


@dataclasses.dataclass(frozen=True)
class Provenance:
    """Where each row of a split came from.

    Attributes:
        files: the distinct source files (or image files) of the split.
        file_index: int32 ``(N,)``, each row's index into ``files``.
        lines: int64 ``(N,)``, each row's 1-based line in its file (header = line 1);
            0 where the row is a whole image file.
    """

    files: tuple[str, ...]
    file_index: np.ndarray
    lines: np.ndarray

    def __len__(self) -> int:
        return len(self.lines)

    def __getitem__(self, row: int) -> str:
        """``"file, line L"`` for a CSV row, the image path for an image."""
        file, line = self.files[self.file_index[row]], int(self.lines[row])
        return f"{file}, line {line}" if line else file

    def take(self, indices: np.ndarray) -> Provenance:
        return Provenance(self.files, self.file_index[indices], self.lines[indices])


@dataclasses.dataclass(frozen=True)
class Split:
    """One split: images, labels and where each row came from.

    Attributes:
        images: uint8 ``(N, 48, 48)`` grey images.
        labels: int64 ``(N,)`` class indices into ``FER2013Data.class_names``.
        provenance: source file and line (or image path) per row.
        distributions: float32 ``(N, C)`` FER+ vote distributions, or None.
    """

    images: np.ndarray
    labels: np.ndarray
    provenance: Provenance
    distributions: np.ndarray | None = None

    def __post_init__(self):
        sizes = {len(self.images), len(self.labels), len(self.provenance)}
        if self.distributions is not None:
            sizes.add(len(self.distributions))
        if len(sizes) != 1:
            raise ValueError(f"split arrays disagree in length: {sorted(sizes)}")

    def __len__(self) -> int:
        return len(self.labels)

    def take(self, indices: np.ndarray) -> Split:
        """The rows at ``indices``, in that order."""
        distributions = None if self.distributions is None else self.distributions[indices]
        return Split(self.images[indices], self.labels[indices],
                     self.provenance.take(indices), distributions)


@dataclasses.dataclass
class FER2013Data:
    """What a reader returns.

    Attributes:
        splits: ``train``/``val``/``test`` -> :class:`Split`, only the splits present.
        class_names: label index -> class name.
        split_convention: how source parts map to splits, for every report to state.
        source: the path the data was read from.
        rows_read: data rows (or image files) read from the source, skipped ones included.
        skipped: rows left out under ``on_error="skip"``, with reasons.
        excluded: rows removed on purpose by a labelling protocol (FER+), reason -> count.
        notes: facts a report should state (absent splits, resized images, ...).
        test_is_carved: True when ``test`` was carved from train rather than read.
        num_resized: images resized to 48x48 (only with ``allow_resize=True``).
        cache_path: the ``.npz`` cache used, or None.
        cache_hit: True when the arrays came from ``cache_path`` rather than a parse.
    """

    splits: dict[str, Split]
    class_names: tuple[str, ...]
    split_convention: str
    source: str
    rows_read: int
    skipped: list[Skipped] = dataclasses.field(default_factory=list)
    excluded: dict[str, int] = dataclasses.field(default_factory=dict)
    notes: list[str] = dataclasses.field(default_factory=list)
    test_is_carved: bool = False
    num_resized: int = 0
    cache_path: str | None = None
    cache_hit: bool = False


def carve_test_split(data: FER2013Data, fraction: float, seed: int) -> FER2013Data:
    """Carve a deterministic, stratified ``test`` split out of ``train``.

    From each class, ``round(fraction * n_class)`` training rows drawn with
    ``np.random.default_rng(seed)`` move to ``test``; both splits keep the source's row order.

    Args:
        data: a dataset with a ``train`` split and no ``test`` split.
        fraction: share of each class to move, in (0, 1).
        seed: seed of the draw.

    Returns:
        A new dataset with ``test_is_carved=True`` and the convention and notes saying so.
    """
    if not 0.0 < fraction < 1.0:
        raise ValueError(f"carve_test must be a fraction in (0, 1); got {fraction!r}")
    if "test" in data.splits:
        raise ValueError(f"{data.source} has a test split; carve_test would replace it: "
                         "pass carve_test=None")
    if "train" not in data.splits:
        raise ValueError(f"{data.source} has no train split to carve a test split from")
    train = data.splits["train"]
    rng = np.random.default_rng(seed)
    chosen = []
    for label in range(len(data.class_names)):
        rows = np.flatnonzero(train.labels == label)
        chosen.append(rng.permutation(rows)[: round(fraction * len(rows))])
    is_test = np.zeros(len(train), dtype=bool)
    is_test[np.concatenate(chosen)] = True
    splits = dict(data.splits)
    splits["train"] = train.take(np.flatnonzero(~is_test))
    splits["test"] = train.take(np.flatnonzero(is_test))
    carved = (f"test carved from train: a stratified {fraction:.0%} of each class "
              f"(seed {seed}), not PrivateTest")
    return dataclasses.replace(
        data, splits={name: splits[name] for name in SPLITS if name in splits},
        test_is_carved=True, split_convention=f"{data.split_convention}; {carved}",
        notes=[*data.notes, f"{carved}: {int(is_test.sum())} rows"])
