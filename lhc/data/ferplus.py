"""FER+ labels (Microsoft's ``fer2013new.csv`` votes) for the rows of a Kaggle ``fer2013.csv``.

The two files hold the same rows in the same order: the row on line L of one is the row on
line L of the other, and their Usage must agree (checked). FER+ has 8 classes: FER2013's 7 in
FER2013's order, then Contempt (index 7), so labels 0..6 mean the same in both.

``mode="majority"`` follows the FER+ protocol: a class voted by a single annotator counts as
an outlier and its vote is removed; a row keeps the class holding more than half of the
remaining votes; rows without such a majority, or whose majority is "unknown" or "NF" (not
a face), and rows without an image name (judged not a face) are excluded and counted.
``mode="distribution"`` keeps every row with an image name and at least one emotion vote,
with the raw votes over the 8 emotions normalised to sum to 1 in ``Split.distributions``
and the most voted class (the first on a tie) as its label.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable
from pathlib import Path

import numpy as np

from lhc.data.dataset import (
    FER2013_CLASSES,
    DataError,
    ErrorPolicy,
    FER2013Data,
    Split,
    carve_test_split,
)
from lhc.data.fer_csv import (
    CELL_STRIP,
    USAGE_NAMES,
    USAGE_SPLITS,
    field_count_error,
    read_header,
    shorten,
    split_lines,
)
from lhc.data.readers import load_fer2013

FERPLUS_CLASSES = (*FER2013_CLASSES, "Contempt")
# Vote columns of fer2013new.csv, in its order, and the FER+ class each one votes for
# (None for the two non-emotion columns).
VOTE_COLUMNS = ("neutral", "happiness", "surprise", "sadness", "anger", "disgust", "fear",
                "contempt", "unknown", "NF")
_VOTE_CLASS = (6, 3, 5, 4, 0, 1, 2, 7)
FERPLUS_COLUMNS = ("Usage", "Image name", *VOTE_COLUMNS)
MODES = ("majority", "distribution")


@dataclasses.dataclass
class VoteTable:
    """The valid rows of a ``fer2013new.csv``, indexed by line.

    Attributes:
        row_of_line: ``(lines + 2,)`` row index of each line number, -1 where no valid row.
        usages: ``(R,)`` Usage as an index into ``USAGE_NAMES``.
        has_image: ``(R,)`` bool, the row names an image (else it was judged not a face).
        votes: int64 ``(R, 10)`` in ``VOTE_COLUMNS`` order.
        rows_read: non-blank data lines read.
    """

    row_of_line: np.ndarray
    usages: np.ndarray
    has_image: np.ndarray
    votes: np.ndarray
    rows_read: int


def load_ferplus(fer_csv_path: str | os.PathLike, ferplus_csv_path: str | os.PathLike, *,
                 mode: str = "majority", on_error: str = "raise",
                 carve_test: float | None = None, seed: int = 0,
                 cache_dir: str | os.PathLike | None = None) -> FER2013Data:
    """Read FER2013 images with FER+ labels (8 classes, with Contempt).

    Args:
        fer_csv_path: Kaggle ``fer2013.csv[.gz]`` (the images).
        ferplus_csv_path: ``fer2013new.csv`` (the votes), row-aligned with it.
        mode: ``"majority"`` (FER+ majority vote) or ``"distribution"`` (vote shares).
        on_error: ``"raise"`` or ``"skip"``, for invalid rows of either file.
        carve_test: as in :func:`load_fer2013`, stratified by the FER+ labels.
        seed: seed of the carve.
        cache_dir: cache for the parsed images, as in :func:`load_fer2013`.

    Returns:
        The splits, ``class_names`` ``FERPLUS_CLASSES``, rows excluded by the protocol
        counted per reason in ``excluded`` and stated in ``notes``.

    Raises:
        DataError: invalid rows, or files that are not row-aligned.
    """
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}; got {mode!r}")
    if not Path(fer_csv_path).is_file():
        raise ValueError(f"{fer_csv_path}: FER+ votes align with the rows of a Kaggle "
                         "fer2013.csv file; expected that file")
    images = load_fer2013(fer_csv_path, on_error=on_error, cache_dir=cache_dir)
    policy = ErrorPolicy(on_error)
    ferplus_file = str(ferplus_csv_path)
    table = read_votes(Path(ferplus_csv_path).read_bytes(), ferplus_file, policy)
    if table.rows_read != images.rows_read:
        raise DataError(ferplus_file, None,
                        f"{images.rows_read} data rows, one per row of {images.source}",
                        f"{table.rows_read} rows")
    split_usage = {USAGE_SPLITS[usage]: index for index, usage in enumerate(USAGE_NAMES)}
    excluded: dict[str, int] = {}
    splits, notes = {}, list(images.notes)
    for name, split in images.splits.items():
        lines = split.provenance.lines
        rows = table.row_of_line[np.minimum(lines, len(table.row_of_line) - 1)]
        aligned = rows >= 0
        same_usage = aligned.copy()
        same_usage[aligned] = table.usages[rows[aligned]] == split_usage[name]
        for row, line in zip(rows[aligned & ~same_usage], lines[aligned & ~same_usage],
                             strict=True):
            policy(DataError(ferplus_file, int(line), f"Usage {USAGE_NAMES[split_usage[name]]}, "
                             f"as on line {line} of {images.source}",
                             USAGE_NAMES[table.usages[row]]))
        aligned &= same_usage
        keep, labels, distributions = _label(table, rows[aligned], mode, excluded)
        kept_rows = np.flatnonzero(aligned)[keep]
        split = split.take(kept_rows)
        if len(split):
            splits[name] = Split(split.images, labels, split.provenance, distributions)
        else:
            notes.append(f"no {name} rows left with a FER+ label: no {name} split")
    kept = sum(len(split) for split in splits.values())
    reasons = ", ".join(f"{count} {reason}" for reason, count in excluded.items())
    protocol_note = (f"FER+ {mode} labels from {ferplus_file}: {kept} rows kept"
                     + (f"; excluded: {reasons}" if reasons else ""))
    data = dataclasses.replace(
        images, splits=splits, class_names=FERPLUS_CLASSES, excluded=excluded,
        skipped=[*images.skipped, *policy.skipped],
        split_convention=f"{images.split_convention}; labels: FER+ {mode} vote",
        notes=[*notes, protocol_note, *policy.notes()])
    if carve_test is not None:
        data = carve_test_split(data, carve_test, seed)
    return data


def read_votes(text: bytes, file: str, record: Callable[[DataError], None]) -> VoteTable:
    """Parse and validate a ``fer2013new.csv``.

    Raises:
        DataError: empty file or bad header (always), invalid rows when ``record`` raises.
    """
    lines = split_lines(text, file, FERPLUS_COLUMNS)
    separator, column, num_columns = read_header(lines[0], file, FERPLUS_COLUMNS)
    usage_of = {name.lower().encode(): index for index, name in enumerate(USAGE_NAMES)}
    vote_columns = [column[name] for name in VOTE_COLUMNS]
    line_numbers, usages, has_image, votes = [], [], [], []
    rows_read = 0
    for line_number, line in enumerate(lines[1:], start=2):
        if not line.strip():
            continue
        rows_read += 1
        cells = line.rstrip(b"\r").split(separator)
        if len(cells) != num_columns:
            record(field_count_error(file, line_number, num_columns, separator, len(cells)))
            continue
        usage = usage_of.get(cells[column["Usage"]].strip(CELL_STRIP).lower())
        row_votes = [cells[index].strip(CELL_STRIP) for index in vote_columns]
        if usage is None:
            record(DataError(file, line_number, f"Usage {', '.join(USAGE_NAMES)}",
                             shorten(cells[column["Usage"]])))
        elif not all(vote.isdigit() for vote in row_votes):
            bad = next(vote for vote in row_votes if not vote.isdigit())
            record(DataError(file, line_number, "vote counts (integers >= 0) in columns "
                             f"{VOTE_COLUMNS[0]}..{VOTE_COLUMNS[-1]}", shorten(bad)))
        else:
            line_numbers.append(line_number)
            usages.append(usage)
            has_image.append(bool(cells[column["Image name"]].strip(CELL_STRIP)))
            votes.append([int(vote) for vote in row_votes])
    # One spare entry past the last line: lines beyond the file look up -1 there.
    row_of_line = np.full(len(lines) + 2, -1, dtype=np.int64)
    row_of_line[line_numbers] = np.arange(len(line_numbers))
    return VoteTable(row_of_line, np.asarray(usages, dtype=np.int8),
                     np.asarray(has_image, dtype=bool),
                     np.asarray(votes, dtype=np.int64).reshape(-1, len(VOTE_COLUMNS)), rows_read)


def _label(table: VoteTable, rows: np.ndarray, mode: str,
           excluded: dict[str, int]) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """Labels of the vote rows ``rows`` under ``mode``; adds exclusion counts to ``excluded``.

    Returns:
        The kept mask ``(len(rows),)``, kept labels int64 and, in distribution mode, kept
        vote distributions float32 ``(kept, 8)`` in ``FERPLUS_CLASSES`` order.
    """
    votes = table.votes[rows]  # (R, 10)
    # Reorder the 8 emotion columns to FERPLUS_CLASSES order: class k <- its FER+ column.
    to_class = np.argsort(_VOTE_CLASS)
    reasons = {"without an image name (not a face)": ~table.has_image[rows]}
    if mode == "majority":
        counted = np.where(votes > 1, votes, 0)  # one vote alone is an outlier (FER+)
        winner = counted.argmax(axis=1)
        has_majority = 2 * counted.max(axis=1) > counted.sum(axis=1)
        reasons["without a majority"] = ~has_majority
        for column, reason in (("unknown", "with majority 'unknown'"),
                               ("NF", "with majority 'NF' (not a face)")):
            reasons[reason] = has_majority & (winner == VOTE_COLUMNS.index(column))
        distributions = None
    else:
        emotion_votes = votes[:, :8][:, to_class]  # (R, 8)
        totals = emotion_votes.sum(axis=1)
        reasons["without emotion votes"] = totals == 0
    keep = np.ones(len(rows), dtype=bool)
    for reason, mask in reasons.items():
        count = int(np.count_nonzero(mask & keep))
        if count:
            excluded[reason] = excluded.get(reason, 0) + count
        keep &= ~mask
    if mode == "majority":
        labels = np.asarray(_VOTE_CLASS, dtype=np.int64)[winner[keep]]
    else:
        distributions = (emotion_votes[keep] / totals[keep, None]).astype(np.float32)
        labels = distributions.argmax(axis=1).astype(np.int64)
    return keep, labels, distributions
