"""The data pack (lhc.data.pack): lossless round trips, integrity checks, reader and CLI.

Images are made here (synthetic faces or numpy noise); the real-data test packs the shared
copy and is skipped, saying why, when it is absent.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import struct
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from lhc.data import DataError, load_fer2013, pack
from lhc.data.synthetic import generate, write_fer2013_csv

REAL_CSV = Path(__file__).resolve().parents[2] / "shared" / "fer2013" / "fer2013.csv.gz"


def run_cli(*args, cwd=None):
    return subprocess.run([sys.executable, "-m", "lhc.cli", *args], capture_output=True,
                          text=True, cwd=cwd, timeout=120)


@pytest.fixture(scope="module")
def synthetic_csv(tmp_path_factory):
    folder = tmp_path_factory.mktemp("pack")
    csv_path = folder / "fer2013.csv"
    # No PrivateTest rows, as in the shared copy: the reader notes it and carving applies.
    written = write_fer2013_csv(csv_path, 120, seed=3, usage_fractions=(0.8, 0.2, 0.0))
    return csv_path, written


def assert_same_data(expected, actual, file_name=str):
    """``actual`` holds what ``expected`` does; ``file_name`` maps expected's file names."""
    assert list(actual.splits) == list(expected.splits)
    for name, split in expected.splits.items():
        other = actual.splits[name]
        np.testing.assert_array_equal(other.images, split.images)
        assert other.images.dtype == np.uint8
        np.testing.assert_array_equal(other.labels, split.labels)
        assert other.provenance.files == tuple(map(file_name, split.provenance.files))
        np.testing.assert_array_equal(other.provenance.file_index, split.provenance.file_index)
        np.testing.assert_array_equal(other.provenance.lines, split.provenance.lines)
    assert actual.split_convention == expected.split_convention
    assert actual.notes == expected.notes
    assert actual.rows_read == expected.rows_read
    assert actual.class_names == expected.class_names


def test_med_predictor_on_a_hand_computed_case():
    # The four pixels of a 3x3 image that have W, N and NW, worked by hand:
    # (1, 1): W=50, N=10, NW=60 >= max(W, N)  -> min(W, N)   = 10
    # (1, 2): W=90, N=80, NW=10 <= min(W, N)  -> max(W, N)   = 90
    # (2, 1): W=30, N=90, NW=50 in between    -> W + N - NW  = 70
    # (2, 2): W=20, N=40, NW=90 >= max(W, N)  -> min(W, N)   = 20
    image = np.array([[60, 10, 80],
                      [50, 90, 40],
                      [30, 20, 25]], dtype=np.int16)
    west, north, north_west = image[1:, :-1], image[:-1, 1:], image[:-1, :-1]
    np.testing.assert_array_equal(pack.med_prediction(west, north, north_west),
                                  [[10, 90], [70, 20]])


def test_neighbours_are_causal_and_substitute_at_borders():
    positions = pack.neighbour_positions()
    here = np.arange(48 * 48)[:, None]
    constant = 48 * 48
    assert ((positions < here) | (positions == constant)).all()
    west, north = pack.NEIGHBOUR_NAMES.index("W"), pack.NEIGHBOUR_NAMES.index("N")
    assert (positions[0] == constant).all()  # the first pixel has no decoded neighbour
    assert positions[5, north] == 4  # first row: N is replaced by W
    assert positions[48 * 3, west] == 48 * 2  # first column: W is replaced by N
    assert positions[48 * 3 + 7, west] == 48 * 3 + 6  # inside: W is the left pixel


def test_codec_round_trip_is_exact_on_noise_and_flat_images():
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, size=(20, 48, 48), dtype=np.uint8)
    images[0] = 0  # a blank image, as the real data has
    images[1] = 255
    images[2] = np.add.outer(np.arange(48), np.arange(48)).astype(np.uint8) * 5  # wraps round
    encoded = pack.encode_images(images)
    np.testing.assert_array_equal(pack.decode_images(encoded), images)
    assert (pack.normalise_frequencies(np.eye(3, 256, dtype=np.int64) * 7).sum(axis=1)
            == pack.PROB_SCALE).all()


def test_round_trip_of_synthetic_faces_keeps_pixels_labels_usage_provenance(tmp_path):
    faces = generate(90, seed=5)
    lines = [f"{label},{' '.join(map(str, image.ravel()))},{usage}"
             for image, label, usage in zip(faces.images, faces.labels, faces.usage, strict=True)]
    csv_path = tmp_path / "faces.csv"
    csv_path.write_text("emotion,pixels,Usage\n" + "\n".join(lines) + "\n")
    info = pack.write_pack(csv_path, tmp_path / "faces.lhcpack")
    assert info.num_images == 90 and info.num_bytes == info.path.stat().st_size
    data = pack.read_pack(info.path)
    usage_of = {"Training": "train", "PublicTest": "val", "PrivateTest": "test"}
    for usage, split in usage_of.items():
        rows = np.flatnonzero(faces.usage == usage)
        np.testing.assert_array_equal(data.splits[split].images, faces.images[rows])
        np.testing.assert_array_equal(data.splits[split].labels, faces.labels[rows])
        # Header = line 1, so row r of the file is on line r + 2.
        np.testing.assert_array_equal(data.splits[split].provenance.lines, rows + 2)
        assert data.splits[split].provenance.files == ("faces.csv",)
    assert data.splits["val"].provenance[0] == f"faces.csv, line {rows_of(faces, 'PublicTest')}"
    assert data.source == str(info.path)
    # Nothing in the pack is stored as plain pixels: it is smaller than the raw bytes.
    assert info.num_bytes < info.raw_pixel_bytes


def rows_of(faces, usage):
    return int(np.flatnonzero(faces.usage == usage)[0]) + 2


def test_load_fer2013_reads_a_pack_as_it_reads_the_csv(synthetic_csv, tmp_path, monkeypatch):
    csv_path, _ = synthetic_csv
    # Relative paths from the CSV's folder: provenance then names the file the same way.
    monkeypatch.chdir(csv_path.parent)
    from_csv = load_fer2013(csv_path.name)
    pack.write_pack(from_csv, tmp_path / "fer.lhcpack")
    from_pack = load_fer2013(tmp_path / "fer.lhcpack")
    assert_same_data(from_csv, from_pack)
    assert from_pack.source == str(tmp_path / "fer.lhcpack")
    carved_csv = load_fer2013(csv_path.name, carve_test=0.2, seed=1)
    carved_pack = load_fer2013(tmp_path / "fer.lhcpack", carve_test=0.2, seed=1)
    assert carved_pack.test_is_carved and "test" in carved_pack.splits
    assert_same_data(carved_csv, carved_pack)
    with pytest.raises(ValueError, match="not carved"):
        pack.write_pack(carved_csv, tmp_path / "carved.lhcpack")


def test_pack_from_an_absolute_path_names_files_relative_to_their_folder(synthetic_csv,
                                                                          tmp_path):
    csv_path, written = synthetic_csv
    data = pack.read_pack(pack.write_pack(csv_path, tmp_path / "a.lhcpack").path)
    assert data.splits["train"].provenance[0] == "fer2013.csv, line 2"
    np.testing.assert_array_equal(data.splits["train"].images,
                                  written.images[written.usage == "Training"])


def test_a_pack_of_a_pack_keeps_the_original_names(synthetic_csv, tmp_path):
    csv_path, _ = synthetic_csv
    first = pack.write_pack(csv_path, tmp_path / "first.lhcpack").path
    second = pack.read_pack(pack.write_pack(first, tmp_path / "second.lhcpack").path)
    assert_same_data(pack.read_pack(first), second)
    assert second.splits["val"].provenance.files == ("fer2013.csv",)


def flip_byte(path, offset):
    blob = bytearray(path.read_bytes())
    blob[offset] ^= 0x01
    path.write_bytes(bytes(blob))


def test_a_flipped_byte_fails_naming_the_file(synthetic_csv, tmp_path):
    csv_path, _ = synthetic_csv
    packed = pack.write_pack(csv_path, tmp_path / "fer.lhcpack").path
    size = packed.stat().st_size
    for offset, match in ((size - 100, "payload sha256"), (60, "header matching its sha256"),
                          (0, "lhc data pack")):
        damaged = tmp_path / f"damaged-{offset}.lhcpack"
        damaged.write_bytes(packed.read_bytes())
        flip_byte(damaged, offset)
        reader = pack.read_pack if offset == 0 else load_fer2013
        with pytest.raises(DataError, match=match) as caught:
            reader(damaged)
        assert caught.value.file == str(damaged)


def test_pixel_checksum_is_verified_after_decoding(synthetic_csv, tmp_path):
    csv_path, _ = synthetic_csv
    packed = pack.write_pack(csv_path, tmp_path / "fer.lhcpack").path
    blob = packed.read_bytes()
    prefix = len(pack.MAGIC) + 4 + 32
    (length,) = struct.unpack_from("<I", blob, len(pack.MAGIC))
    header = json.loads(blob[prefix:prefix + length])
    header["pixels_sha256"] = hashlib.sha256(b"other pixels").hexdigest()
    new_header = json.dumps(header, sort_keys=True).encode()
    # A consistent header and payload whose pixel checksum does not match the decoded pixels.
    forged = tmp_path / "forged.lhcpack"
    forged.write_bytes(pack.MAGIC + struct.pack("<I", len(new_header))
                       + hashlib.sha256(new_header).digest() + new_header
                       + blob[prefix + length:])
    with pytest.raises(DataError, match="pixels with sha256") as caught:
        pack.read_pack(forged)
    assert str(forged) in str(caught.value)


def test_a_truncated_pack_fails_clearly(synthetic_csv, tmp_path):
    csv_path, _ = synthetic_csv
    blob = pack.write_pack(csv_path, tmp_path / "fer.lhcpack").path.read_bytes()
    for keep, match in ((len(blob) - 1, "truncated"), (60, "truncated"), (5, "5 bytes")):
        cut = tmp_path / f"cut-{keep}.lhcpack"
        cut.write_bytes(blob[:keep])
        with pytest.raises(DataError, match=match) as caught:
            pack.read_pack(cut)
        assert str(cut) in str(caught.value)


def test_cli_pack_then_unpack_reproduces_the_csv(synthetic_csv, tmp_path):
    csv_path, _ = synthetic_csv
    gz_path = tmp_path / "fer2013.csv.gz"
    gz_path.write_bytes(gzip.compress(csv_path.read_bytes()))
    packed, unpacked = tmp_path / "fer.lhcpack", tmp_path / "back.csv"
    result = run_cli("data", "pack", str(gz_path), str(packed))
    assert result.returncode == 0, result.stderr
    assert "packed 120 images" in result.stdout
    result = run_cli("data", "unpack", str(packed), str(unpacked))
    assert result.returncode == 0, result.stderr
    assert "wrote 120 rows" in result.stdout
    # write_fer2013_csv and unpack write the same format: the rows come back byte for byte.
    assert unpacked.read_bytes() == csv_path.read_bytes()
    result = run_cli("data", "unpack", str(packed), str(tmp_path / "back.csv.gz"))
    assert result.returncode == 0, result.stderr
    assert gzip.decompress((tmp_path / "back.csv.gz").read_bytes()) == csv_path.read_bytes()


def test_cli_errors_name_the_file_and_what_was_expected(synthetic_csv, tmp_path):
    csv_path, _ = synthetic_csv
    result = run_cli("data", "unpack", str(csv_path), str(tmp_path / "out.csv"))
    assert result.returncode == 2
    assert str(csv_path) in result.stderr and "expected an lhc data pack" in result.stderr
    result = run_cli("data", "unpack", str(csv_path), str(tmp_path / "out.txt"))
    assert result.returncode == 2 and "ending .csv or .csv.gz" in result.stderr
    assert "pack" in run_cli("data", "--help").stdout


@pytest.mark.realdata
@pytest.mark.skipif(not REAL_CSV.is_file(), reason=f"real FER2013 data not found at {REAL_CSV}")
def test_real_data_pack_is_small_and_exact(tmp_path):
    from_csv = load_fer2013(REAL_CSV)
    info = pack.write_pack(from_csv, tmp_path / "fer2013.lhcpack")
    assert info.num_images == 32298
    assert info.num_bytes <= 48e6, f"pack is {info.num_bytes:,} bytes, over 48e6"
    start = time.perf_counter()
    from_pack = load_fer2013(info.path)
    seconds = time.perf_counter() - start
    # The pack names the source file relative to its folder: the name the GPU machine shows.
    assert_same_data(from_csv, from_pack, file_name=lambda file: Path(file).name)
    assert from_pack.splits["train"].provenance[0] == "fer2013.csv.gz, line 2"
    print(f"real pack: {info.num_bytes:,} bytes, loaded in {seconds:.2f} s")
    # The shared file is written as unpack writes: the unpacked CSV is the original's bytes.
    unpacked = tmp_path / "fer2013.csv"
    assert pack.unpack_to_csv(info.path, unpacked) == 32298
    original = hashlib.sha256(gzip.decompress(REAL_CSV.read_bytes())).hexdigest()
    assert hashlib.sha256(unpacked.read_bytes()).hexdigest() == original
