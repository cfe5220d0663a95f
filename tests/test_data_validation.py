"""A corpus of malformed inputs, one per validation rule, each with its clear error."""

from __future__ import annotations

import gzip
import io

import numpy as np
import pytest
from PIL import Image

from lhc.data import DataError, fer_csv, load_fer2013, load_ferplus

HEADER = "emotion,pixels,Usage"
GOOD = " ".join(["7", "80", "255"] * 768)  # 2304 values


def csv_bytes(*rows, header=HEADER):
    return ("\n".join([header, *rows]) + "\n").encode()


def replace_value(position, value):
    """GOOD with the value at 1-based ``position`` replaced."""
    values = GOOD.split(" ")
    values[position - 1] = value
    return " ".join(values)


# name -> (file content, line of the error or None, words the message must hold)
CSV_CASES = {
    "missing column": (csv_bytes(f"0,{GOOD}", header="emotion,pixels"), 1,
                       "header columns emotion,pixels,Usage"),
    "misnamed column": (csv_bytes(f"0,{GOOD},Training", header="label,pixels,Usage"), 1,
                        "header columns emotion,pixels,Usage"),
    "empty file": (b"", None, "an empty file"),
    "only whitespace": (b"\n  \n", None, "an empty file"),
    "header only": (csv_bytes(), None, "only the header"),
    "too few pixels": (csv_bytes(f"0,{GOOD},Training", f"1,{GOOD.rsplit(' ', 1)[0]},Training"),
                       3, "2303 values"),
    "too many pixels": (csv_bytes(f"0,{GOOD} 9,Training"), 2, "2305 values"),
    "empty pixels": (csv_bytes("0,,Training"), 2, "an empty pixels field"),
    "non-integer pixel": (csv_bytes(f"0,{replace_value(17, '1.5')},Training"), 2,
                          "'1.5' at pixel 17 (not an integer)"),
    "negative pixel": (csv_bytes(f"0,{replace_value(3, '-4')},Training"), 2,
                       "'-4' at pixel 3 (not an integer)"),
    "pixel above 255": (csv_bytes(f"0,{replace_value(2304, '256')},Training"), 2,
                        "'256' at pixel 2304 (out of range 0..255)"),
    "pixel with four digits": (csv_bytes(f"0,{replace_value(5, '1000')},Training"), 2,
                               "'1000' at pixel 5 (out of range 0..255)"),
    "double space": (csv_bytes(f"0,{GOOD.replace(' ', '  ', 1)},Training"), 2,
                     "an empty value at pixel 2 (two spaces in a row)"),
    "unknown label": (csv_bytes(f"7,{GOOD},Training"), 2, "an emotion label 0..6"),
    "label as a word": (csv_bytes(f"happy,{GOOD},Training"), 2, "found 'happy'"),
    "unknown Usage": (csv_bytes(f"0,{GOOD},Training", f"0,{GOOD},Validation"), 3,
                      "Usage Training, PublicTest, PrivateTest; found 'Validation'"),
    "extra field": (csv_bytes(f"0,{GOOD},Training,x"), 2, "3 fields separated by ','; found 4"),
}


@pytest.mark.parametrize("case", list(CSV_CASES))
def test_malformed_csv_names_file_line_and_expectation(tmp_path, case):
    content, line, words = CSV_CASES[case]
    path = tmp_path / "fer2013.csv"
    path.write_bytes(content)

    with pytest.raises(DataError) as caught:
        load_fer2013(path)

    error = caught.value
    message = str(error)
    assert error.file == str(path) and message.startswith(str(path))
    assert error.line == line
    if line is not None:
        assert f"line {line}:" in message
    assert words in message
    assert "expected" in message


def test_unreadable_gzip(tmp_path):
    path = tmp_path / "fer2013.csv.gz"
    path.write_bytes(b"this is not gzip at all")
    with pytest.raises(DataError, match=r"fer2013\.csv\.gz: expected a complete, readable gzip"):
        load_fer2013(path)


def test_truncated_gzip(tmp_path):
    path = tmp_path / "fer2013.csv.gz"
    whole = gzip.compress(csv_bytes(*[f"0,{GOOD},Training"] * 20))
    path.write_bytes(whole[: len(whole) // 2])
    with pytest.raises(DataError, match=r"readable gzip stream; found EOFError"):
        load_fer2013(path)


def test_errors_come_in_line_order(tmp_path, monkeypatch):
    # A pixel error on line 3 and a label error on line 5, parsed in chunks of 2 rows: the
    # first error in the file is the one raised, whichever check finds it.
    monkeypatch.setattr(fer_csv, "_CHUNK_ROWS", 2)
    rows = [f"0,{GOOD},Training", f"0,{GOOD} 1,Training", f"0,{GOOD},Training",
            f"9,{GOOD},Training"]
    path = tmp_path / "fer2013.csv"
    path.write_bytes(csv_bytes(*rows))
    with pytest.raises(DataError, match="line 3:"):
        load_fer2013(path)
    path.write_bytes(csv_bytes(*reversed(rows)))
    with pytest.raises(DataError, match="line 2:"):
        load_fer2013(path)


def test_skip_mode_counts_every_bad_row(tmp_path):
    bad_rows = {3: f"0,{GOOD} 1,Training", 5: f"8,{GOOD},Training",
                6: f"0,{replace_value(9, 'x')},PublicTest", 8: f"0,{GOOD},Elsewhere",
                9: "0,1 2 3"}
    rows = [bad_rows.get(line, f"{line % 7},{GOOD},Training") for line in range(2, 12)]
    path = tmp_path / "fer2013.csv"
    path.write_bytes(csv_bytes(*rows))

    data = load_fer2013(path, on_error="skip")

    assert [(skip.file, skip.line) for skip in data.skipped] == [(str(path), line)
                                                                 for line in sorted(bad_rows)]
    assert all(skip.reason.startswith("expected") for skip in data.skipped)
    kept_lines = [line for line in range(2, 12) if line not in bad_rows]
    np.testing.assert_array_equal(data.splits["train"].provenance.lines, kept_lines)
    np.testing.assert_array_equal(data.splits["train"].labels, [line % 7 for line in kept_lines])
    assert data.rows_read == 10
    assert any("5 invalid rows skipped" in note for note in data.notes)


def test_on_error_must_be_known(tmp_path):
    with pytest.raises(ValueError, match="on_error"):
        load_fer2013(tmp_path, on_error="ignore")


def test_folder_matching_no_layout(tmp_path):
    (tmp_path / "readme.txt").write_text("nothing here")
    with pytest.raises(DataError, match="exactly one of: a fer2013.csv"):
        load_fer2013(tmp_path)
    with pytest.raises(FileNotFoundError):
        load_fer2013(tmp_path / "missing.csv")


def save_png(path, array):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path)


def png_bytes(array):
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="PNG")
    return buffer.getvalue()


FACE = np.arange(48 * 48, dtype=np.uint16).reshape(48, 48).astype(np.uint8)
NOISE = np.random.default_rng(0).integers(0, 256, (48, 48), dtype=np.uint8)
# name -> (bytes of train/happy/bad.png, words the message must hold)
IMAGE_CASES = {
    "undecodable image": (b"\x89PNG but not really", "expected a decodable PNG or JPEG image"),
    "truncated image": (png_bytes(NOISE)[:300],
                        "expected a decodable PNG or JPEG image"),
    "image not 48x48": (png_bytes(np.zeros((40, 64), np.uint8)),
                        "expected a 48x48 image (pass allow_resize=True to resize, or "
                        "--allow-resize to lhc data-report); found 64x40"),
}


@pytest.mark.parametrize("case", list(IMAGE_CASES))
def test_bad_image_names_its_path(tmp_path, case):
    content, words = IMAGE_CASES[case]
    save_png(tmp_path / "train" / "happy" / "good.png", FACE)
    bad = tmp_path / "train" / "happy" / "bad.png"
    bad.write_bytes(content)

    with pytest.raises(DataError) as caught:
        load_fer2013(tmp_path)
    assert caught.value.file == str(bad) and caught.value.line is None
    assert str(caught.value).startswith(f"{bad}: ") and words in str(caught.value)

    data = load_fer2013(tmp_path, on_error="skip")
    assert [skip.file for skip in data.skipped] == [str(bad)]
    assert len(data.splits["train"]) == 1 and data.rows_read == 2


def test_unknown_class_folder(tmp_path):
    save_png(tmp_path / "train" / "contempt" / "a.png", FACE)
    save_png(tmp_path / "train" / "contempt" / "b.png", FACE)
    save_png(tmp_path / "train" / "happy" / "c.png", FACE)
    with pytest.raises(DataError, match=r"contempt/a\.png: expected a class folder named one of"):
        load_fer2013(tmp_path)
    data = load_fer2013(tmp_path, on_error="skip")
    assert len(data.skipped) == 2 and len(data.splits["train"]) == 1


FERPLUS_HEADER = ("Usage,Image name,neutral,happiness,surprise,sadness,anger,disgust,fear,"
                  "contempt,unknown,NF")
VOTES = "10,0,0,0,0,0,0,0,0,0"


def write_pair(tmp_path, usages, ferplus_rows):
    fer = tmp_path / "fer2013.csv"
    fer.write_bytes(csv_bytes(*[f"0,{GOOD},{usage}" for usage in usages]))
    ferplus = tmp_path / "fer2013new.csv"
    ferplus.write_bytes(csv_bytes(*ferplus_rows, header=FERPLUS_HEADER))
    return fer, ferplus


def test_ferplus_with_missing_rows(tmp_path):
    fer, ferplus = write_pair(tmp_path, ["Training"] * 3, [f"Training,a.png,{VOTES}"] * 2)
    with pytest.raises(DataError, match=r"fer2013new\.csv: expected 3 data rows, one per row of"):
        load_ferplus(fer, ferplus)


def test_ferplus_misaligned_usage(tmp_path):
    fer, ferplus = write_pair(tmp_path, ["Training", "PublicTest"],
                              [f"Training,a.png,{VOTES}", f"Training,b.png,{VOTES}"])
    with pytest.raises(DataError, match=r"fer2013new\.csv, line 3: expected Usage PublicTest, "
                                        r"as on line 3 of .*; found Training"):
        load_ferplus(fer, ferplus)
    data = load_ferplus(fer, ferplus, on_error="skip")
    assert [skip.line for skip in data.skipped] == [3] and "val" not in data.splits


def test_ferplus_bad_votes_and_header(tmp_path):
    fer, ferplus = write_pair(tmp_path, ["Training"], ["Training,a.png,10,0,0,0,0,0,0,0,0,x"])
    with pytest.raises(DataError, match=r"line 2: expected vote counts .*; found 'x'"):
        load_ferplus(fer, ferplus)
    ferplus.write_bytes(b"Usage,Image name,neutral\nTraining,a.png,10\n")
    with pytest.raises(DataError, match=r"fer2013new\.csv, line 1: expected header columns"):
        load_ferplus(fer, ferplus)
