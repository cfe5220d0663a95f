"""Parse FER2013-format CSV text (``emotion,pixels[,Usage]``) into validated uint8 images.

The ``pixels`` fields are parsed with numpy on their joined bytes, a chunk of rows at a
time: the full Kaggle file (32,298 rows of 2,304 grey levels each) parses in about two
seconds where a Python loop over the values takes several times longer. Rows the fast path
flags are re-read one by one only to say exactly what is wrong with them.
"""

from __future__ import annotations

import codecs
import dataclasses
import gzip
import zlib
from collections.abc import Callable

import numpy as np

from lhc.data.dataset import FER2013_CLASSES, IMAGE_SIZE, DataError

PIXELS_PER_IMAGE = IMAGE_SIZE * IMAGE_SIZE
PIXELS_EXPECTED = f"{PIXELS_PER_IMAGE} integers 0..255 separated by single spaces (a 48x48 image)"
# Usage values of Kaggle's fer2013.csv (matched case-insensitively) and the split each feeds.
USAGE_SPLITS = {"Training": "train", "PublicTest": "val", "PrivateTest": "test"}
USAGE_NAMES = tuple(USAGE_SPLITS)
KAGGLE_COLUMNS = ("emotion", "pixels", "Usage")
SPLIT_CSV_COLUMNS = ("emotion", "pixels")
_CHUNK_ROWS = 2048  # bounds the parser's temporary arrays to tens of MB
CELL_STRIP = b' \t"'  # some copies quote fields or pad them with blanks


@dataclasses.dataclass
class PixelTable:
    """The valid rows of one CSV file.

    Attributes:
        images: uint8 ``(N, 48, 48)``.
        labels: int64 ``(N,)``.
        lines: int64 ``(N,)`` 1-based line of each row (header = line 1).
        usages: ``(N,)`` Usage value as an index into ``USAGE_NAMES``; None without that column.
        rows_read: non-blank data lines read, invalid ones included.
        blank_lines: blank lines passed over (they hold no row).
    """

    images: np.ndarray
    labels: np.ndarray
    lines: np.ndarray
    usages: np.ndarray | None
    rows_read: int
    blank_lines: int


def decompress_if_gzip(raw: bytes, file: str, is_gz_name: bool) -> bytes:
    """Return ``raw`` unzipped when it is gzip (by name or magic bytes), else unchanged.

    Raises:
        DataError: the gzip stream is unreadable or truncated.
    """
    if not (is_gz_name or raw[:2] == b"\x1f\x8b"):
        return raw
    try:
        return gzip.decompress(raw)
    except (OSError, EOFError, zlib.error) as error:
        raise DataError(file, None, "a complete, readable gzip stream",
                        f"{type(error).__name__}: {error}") from None


def parse_pixel_csv(text: bytes, file: str, columns: tuple[str, ...],
                    record: Callable[[DataError], None]) -> PixelTable:
    """Parse and validate a FER2013-format CSV.

    The separator (comma or semicolon) is the one the header uses; column names are matched
    case-insensitively, in any order, and extra columns are ignored.

    Args:
        text: the file's bytes (already unzipped).
        file: the name errors and provenance give for the file.
        columns: the required columns, ``KAGGLE_COLUMNS`` or ``SPLIT_CSV_COLUMNS``.
        record: called with each invalid row's error (it raises, or notes the skip).

    Returns:
        The valid rows.

    Raises:
        DataError: empty file, header without the required columns, or no data rows
            (always), and invalid rows when ``record`` raises.
    """
    lines = split_lines(text, file, columns)
    separator, column, num_columns = read_header(lines[0], file, columns)
    if len(lines) == 1:
        raise DataError(file, None, "data rows after the header", "only the header")
    with_usage = "Usage" in columns
    label_of = {str(label).encode(): label for label in range(len(FER2013_CLASSES))}
    usage_of = {name.lower().encode(): index for index, name in enumerate(USAGE_NAMES)}

    parts: list[tuple[np.ndarray, ...]] = []
    pending_fields: list[bytes] = []
    pending: list[tuple[int, int, int]] = []  # (line, label, usage) per pending field

    def flush():
        if not pending:
            return
        pixels, valid = _parse_pixel_chunk(pending_fields)
        for row in np.flatnonzero(~valid):
            record(DataError(file, pending[row][0], PIXELS_EXPECTED,
                             _pixel_problem(pending_fields[row])))
        kept = np.asarray(pending, dtype=np.int64)[valid]
        parts.append((pixels, kept))
        pending_fields.clear()
        pending.clear()

    rows_read = blank_lines = 0
    for line_number, line in enumerate(lines[1:], start=2):
        if line.endswith(b"\r"):
            line = line[:-1]
        if not line.strip():
            blank_lines += 1
            continue
        rows_read += 1
        cells = line.split(separator)
        if len(cells) != num_columns:
            error = field_count_error(file, line_number, num_columns, separator, len(cells))
        else:
            label_cell = cells[column["emotion"]].strip(CELL_STRIP)
            label = label_of.get(label_cell)
            usage_cell = cells[column["Usage"]].strip(CELL_STRIP) if with_usage else b""
            usage = usage_of.get(usage_cell.lower(), -1) if with_usage else 0
            if label is None:
                error = DataError(file, line_number, f"an emotion label 0..{len(label_of) - 1}",
                                  shorten(label_cell))
            elif usage < 0:
                error = DataError(file, line_number, f"Usage {', '.join(USAGE_NAMES)}",
                                  shorten(usage_cell))
            else:
                pending_fields.append(cells[column["pixels"]].strip(CELL_STRIP))
                pending.append((line_number, label, usage))
                if len(pending) == _CHUNK_ROWS:
                    flush()
                continue
        flush()  # rows before this one are checked first, so errors come in line order
        record(error)
    flush()

    pixels = np.concatenate([np.empty((0, PIXELS_PER_IMAGE), np.uint8)]
                            + [part[0] for part in parts])  # (N, 2304)
    rows = np.concatenate([np.empty((0, 3), np.int64)] + [part[1] for part in parts])  # (N, 3)
    return PixelTable(
        images=pixels.reshape(-1, IMAGE_SIZE, IMAGE_SIZE),  # (N, 48, 48)
        labels=rows[:, 1].copy(), lines=rows[:, 0].copy(),
        usages=rows[:, 2].astype(np.int8) if with_usage else None,
        rows_read=rows_read, blank_lines=blank_lines)


def split_lines(text: bytes, file: str, columns: tuple[str, ...]) -> list[bytes]:
    """The lines of a CSV file (a UTF-8 byte order mark removed; ``\\r`` left to the caller).

    Raises:
        DataError: the file is empty or blank.
    """
    lines = text.removeprefix(codecs.BOM_UTF8).split(b"\n")
    if not any(line.strip() for line in lines):
        raise DataError(file, None, f"a header line {','.join(columns)} and data rows",
                        "an empty file")
    if lines[-1] == b"":
        lines.pop()  # the final newline ends the last row; it starts no new one
    return lines


def read_header(header: bytes, file: str,
                columns: tuple[str, ...]) -> tuple[bytes, dict[str, int], int]:
    """Find the separator and the required columns in a CSV header line (line 1).

    The separator is whichever of ``;`` and ``,`` the header uses more; names match
    case-insensitively, in any order; extra columns are allowed.

    Returns:
        The separator, each required column's index, and the number of columns.

    Raises:
        DataError: a required column is missing, misnamed or repeated.
    """
    header = header.rstrip(b"\r")
    separator = b";" if header.count(b";") > header.count(b",") else b","
    names = [cell.strip(CELL_STRIP).decode("utf-8", "replace").lower()
             for cell in header.split(separator)]
    if any(names.count(name.lower()) != 1 for name in columns):
        raise DataError(file, 1, f"header columns {','.join(columns)} (each once)",
                        shorten(header, 120))
    return separator, {name: names.index(name.lower()) for name in columns}, len(names)


def field_count_error(file: str, line: int, expected: int, separator: bytes,
                      found: int) -> DataError:
    return DataError(file, line, f"{expected} fields separated by {separator.decode()!r}",
                     f"{found} fields")


def _parse_pixel_chunk(fields: list[bytes]) -> tuple[np.ndarray, np.ndarray]:
    """Parse ``pixels`` fields with numpy on their joined bytes.

    Every field is followed by one space in the joined buffer, so each value ends right
    before a space and a valid row holds exactly 2,304 spaces.

    Returns:
        The valid rows' pixels, uint8 ``(n_valid, 2304)``, and the validity mask ``(k,)``.
    """
    num_rows = len(fields)
    row_end = np.cumsum(np.fromiter(map(len, fields), np.int64, num_rows) + 1)
    buffer = np.frombuffer(b" ".join(fields) + b" ", dtype=np.uint8)
    digits = buffer - np.uint8(ord("0"))  # other bytes wrap round to values above 9
    is_space = buffer == ord(" ")
    spaces = np.flatnonzero(is_space)
    value_length = np.diff(spaces, prepend=-1) - 1
    # Values have 1 to 3 digits; a shorter value's missing digits are masked to 0 (indices
    # below 0, before the very first value, are clipped and masked too).
    values = digits[spaces - 1].astype(np.int16)
    tens = digits.take(spaces - 2, mode="clip")
    values += 10 * np.where(value_length >= 2, tens, 0).astype(np.int16)
    hundreds = digits.take(spaces - 3, mode="clip")
    values += 100 * np.where(value_length >= 3, hundreds, 0).astype(np.int16)
    bad_value = (value_length < 1) | (value_length > 3) | (values > 255)

    values_through_row = np.searchsorted(spaces, row_end - 1, side="right")
    values_per_row = np.diff(values_through_row, prepend=0)
    valid = values_per_row == PIXELS_PER_IMAGE
    valid[np.searchsorted(values_through_row, np.flatnonzero(bad_value), side="right")] = False
    bad_byte = (digits > 9) & ~is_space
    valid[np.searchsorted(row_end, np.flatnonzero(bad_byte), side="right")] = False
    if not valid.all():
        values = values[np.repeat(valid, values_per_row)]
    return values.astype(np.uint8).reshape(-1, PIXELS_PER_IMAGE), valid  # (n_valid, 2304)


def _pixel_problem(field: bytes) -> str:
    """Say what is wrong with a ``pixels`` field the fast path rejected."""
    if not field:
        return "an empty pixels field"
    values = field.split(b" ")
    for position, value in enumerate(values, start=1):
        if not value:
            return f"an empty value at pixel {position} (two spaces in a row)"
        if not value.isdigit():
            return f"{shorten(value)} at pixel {position} (not an integer)"
        if len(value) > 3 or int(value) > 255:
            return f"{shorten(value)} at pixel {position} (out of range 0..255)"
    return f"{len(values)} values"


def shorten(cell: bytes, limit: int = 40) -> str:
    text = cell.decode("utf-8", "replace")
    return repr(text if len(text) <= limit else text[:limit] + "...")
