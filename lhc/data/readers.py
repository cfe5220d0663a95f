"""``load_fer2013``: read FER2013 from any of its common layouts into validated splits.

Layouts (``path`` may be any of them):

1. Kaggle's ``fer2013.csv`` (``emotion,pixels,Usage``), plain or gzip, or a folder holding
   exactly one ``fer2013.csv[.gz]``. Training -> train, PublicTest -> val,
   PrivateTest -> test: the paper's convention.
2. A folder of per-split CSVs ``train.csv``/``val.csv``/``test.csv`` (``emotion,pixels``,
   comma or semicolon separated, plain or gzip; ``training``/``validation`` also accepted).
3. Image folders ``train/<emotion>/*.{png,jpg}`` + ``test/<emotion>/...`` (rules in
   :mod:`lhc.data.folders`).
4. A data pack written by :func:`lhc.data.pack.write_pack` (``lhc data pack``), told by its
   magic bytes whatever its name: the splits, provenance and notes of the source it was made
   from, decoded with numpy alone.

FER+ votes are read by :func:`lhc.data.ferplus.load_ferplus`.
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path

import numpy as np

from lhc.data import cache
from lhc.data.dataset import (
    FER2013_CLASSES,
    SPLITS,
    DataError,
    ErrorPolicy,
    FER2013Data,
    Provenance,
    Split,
    carve_test_split,
)
from lhc.data.fer_csv import (
    KAGGLE_COLUMNS,
    SPLIT_CSV_COLUMNS,
    USAGE_NAMES,
    USAGE_SPLITS,
    PixelTable,
    decompress_if_gzip,
    parse_pixel_csv,
)
from lhc.data.folders import (
    FOLDER_CONVENTION,
    SPLIT_FOLDERS,
    ImageListing,
    decode_image,
    is_image_layout,
    list_image_folders,
    unknown_class_error,
)
from lhc.data.pack import is_pack, read_pack

KAGGLE_CONVENTION = ("Training -> train, PublicTest -> val, PrivateTest -> test "
                     "(the paper's convention)")
SPLIT_CSV_CONVENTION = "train.csv -> train, val.csv -> val, test.csv -> test"
LAYOUTS_EXPECTED = ("a fer2013.csv[.gz] file, a data pack (lhc data pack), a folder with "
                    "train.csv/val.csv/test.csv, or image folders train/<emotion>/ and "
                    "test/<emotion>/")


@dataclasses.dataclass(frozen=True)
class Layout:
    """Which reader a path needs.

    Attributes:
        kind: ``"kaggle"``, ``"pack"``, ``"split_csv"`` or ``"images"``.
        root: the folder provenance names are relative to in the cache.
        files: the CSV to read per split (``"all"`` for a Kaggle file or a pack); empty for
            images.
    """

    kind: str
    root: Path
    files: dict[str, Path]

    @property
    def name(self) -> str:
        """The Kaggle file's name, or the folder's: it starts the cache file's name."""
        return self.files["all"].name if self.kind in ("kaggle", "pack") else self.root.name

    def relative(self, file: Path) -> str:
        """``file``'s path under ``root``: what its bytes are keyed and hashed under."""
        return file.relative_to(self.root).as_posix()


def load_fer2013(path: str | os.PathLike, *, on_error: str = "raise",
                 carve_test: float | None = None, seed: int = 0, allow_resize: bool = False,
                 cache_dir: str | os.PathLike | None = None) -> FER2013Data:
    """Read FER2013 into validated ``train``/``val``/``test`` splits.

    Args:
        path: a Kaggle ``fer2013.csv[.gz]``, a data pack, or a folder of per-split CSVs or
            images.
        on_error: ``"raise"`` at the first invalid row or image, or ``"skip"`` it and list
            it (with its reason) in the result's ``skipped``.
        carve_test: when set, a fraction in (0, 1): carve a stratified ``test`` split from
            ``train`` when the source has none (e.g. the shared copy without PrivateTest);
            the result says so in ``test_is_carved``, notes and convention. A source with
            its own test split keeps it, and a note says carve_test was ignored.
        seed: seed of the carve.
        allow_resize: resize images that are not 48x48 (counted in ``num_resized``)
            instead of failing on them.
        cache_dir: when set, keep the parsed arrays there as ``.npz``, keyed by a content
            hash of the source and these options, and reuse them while the source is unchanged.
            A data pack is not cached: it holds validated rows and decodes about as fast.

    Returns:
        The splits present, with class names, provenance, skipped rows and notes.

    Raises:
        DataError: invalid data (file, line or image path, and what was expected).
        FileNotFoundError: ``path`` does not exist.
    """
    policy = ErrorPolicy(on_error)
    source = Path(path)
    layout = detect_layout(source)
    if layout.kind == "pack":
        return _carve(read_pack(source), carve_test, seed)
    listing = list_image_folders(source) if layout.kind == "images" else None
    if listing is None:
        files = list(layout.files.values())
    else:
        files = [layout.root / relative for entries in listing.images.values()
                 for relative, _ in entries]
    sources = {layout.relative(file): file.read_bytes() for file in files}
    data = entry = None
    if cache_dir is not None:
        options = {"kind": layout.kind, "on_error": on_error, "allow_resize": allow_resize,
                   "ignored": listing.ignored if listing else []}
        key = cache.content_key(sources.items(), options)
        entry = cache.cache_path(cache_dir, layout.name, key)
        data = cache.load(entry, layout.root, str(source))
    if data is None:
        if listing is None:
            data = _read_csvs(layout, sources, policy, source)
        else:
            data = _read_images(layout, listing, sources, policy, allow_resize, source)
        if entry is not None:
            cache.save(entry, data, layout.root)
            data.cache_path = str(entry)
    return _carve(data, carve_test, seed)


def _carve(data: FER2013Data, carve_test: float | None, seed: int) -> FER2013Data:
    """Carve a test split when asked and the source has none (see :func:`load_fer2013`)."""
    if carve_test is not None and "test" in data.splits:
        # A source with its own test split (a full FER2013 with PrivateTest) keeps it, so one
        # profile serves both the shared copy and a user's complete data set.
        data.notes.append("test split read from the source (PrivateTest); carve_test ignored")
    elif carve_test is not None:
        data = carve_test_split(data, carve_test, seed)
    return data


def detect_layout(source: Path) -> Layout:
    """Tell which of the four layouts ``source`` is.

    Raises:
        FileNotFoundError: ``source`` does not exist.
        DataError: a folder matching no layout, or more than one.
    """
    if source.is_file():
        return Layout("pack" if is_pack(source) else "kaggle", source.parent, {"all": source})
    if not source.is_dir():
        raise FileNotFoundError(f"{source}: no such file or folder; expected {LAYOUTS_EXPECTED}")
    split_files: dict[str, Path] = {}
    kaggle_files = []
    for entry in sorted(source.iterdir()):
        name = entry.name.lower().removesuffix(".gz")
        if not (entry.is_file() and name.endswith(".csv")):
            continue
        split = SPLIT_FOLDERS.get(name.removesuffix(".csv"))
        if name == "fer2013.csv":
            kaggle_files.append(entry)
        elif split in split_files:
            raise DataError(str(entry), None, f"one CSV for the {split} split",
                            f"also {split_files[split].name}")
        elif split is not None:
            split_files[split] = entry
    candidates = (("fer2013.csv", kaggle_files), ("per-split CSVs", split_files),
                  ("image folders", is_image_layout(source)))
    found = [kind for kind, present in candidates if present]
    if len(found) != 1 or len(kaggle_files) > 1:
        found_text = " and ".join(found) if found else "none of these"
        raise DataError(str(source), None, f"exactly one of: {LAYOUTS_EXPECTED}", found_text)
    if kaggle_files:
        return Layout("kaggle", source, {"all": kaggle_files[0]})
    if split_files:
        return Layout("split_csv", source, {name: split_files[name] for name in SPLITS
                                            if name in split_files})
    return Layout("images", source, {})


def _read_csvs(layout: Layout, sources: dict[str, bytes], policy: ErrorPolicy,
               source: Path) -> FER2013Data:
    """Parse a Kaggle CSV or per-split CSVs."""
    splits: dict[str, Split] = {}
    rows_read, notes = 0, []
    for name, file in layout.files.items():
        display = str(file)
        raw = sources[layout.relative(file)]
        text = decompress_if_gzip(raw, display, file.name.lower().endswith(".gz"))
        columns = KAGGLE_COLUMNS if layout.kind == "kaggle" else SPLIT_CSV_COLUMNS
        table = parse_pixel_csv(text, display, columns, policy)
        rows_read += table.rows_read
        if table.blank_lines:
            notes.append(f"{display}: {table.blank_lines} blank lines passed over")
        if layout.kind == "kaggle":
            for usage_index, usage in enumerate(USAGE_NAMES):
                rows = np.flatnonzero(table.usages == usage_index)
                splits[USAGE_SPLITS[usage]] = _csv_split(table, rows, display)
        else:
            splits[name] = _csv_split(table, np.arange(len(table.labels)), display)
    if layout.kind == "kaggle":
        absent = {split: f"{usage} absent" for usage, split in USAGE_SPLITS.items()}
        convention = KAGGLE_CONVENTION
    else:
        absent = {split: f"no {split}.csv, or no valid row in it" for split in SPLITS}
        convention = SPLIT_CSV_CONVENTION
    return _assemble(splits, absent, convention, source, rows_read, policy, notes)


def _read_images(layout: Layout, listing: ImageListing, sources: dict[str, bytes],
                 policy: ErrorPolicy, allow_resize: bool, source: Path) -> FER2013Data:
    """Decode the images of an image-folder layout."""
    splits: dict[str, Split] = {}
    num_resized = 0
    for split, entries in listing.images.items():
        images, labels, files = [], [], []
        for relative, label in entries:
            display = str(layout.root / relative)
            if label is None:
                policy(unknown_class_error(display))
                continue
            image, resized = decode_image(sources[relative], display, allow_resize, policy)
            if image is not None:
                num_resized += resized
                images.append(image)
                labels.append(label)
                files.append(display)
        if images:
            provenance = Provenance(tuple(files), np.arange(len(files), dtype=np.int32),
                                    np.zeros(len(files), dtype=np.int64))
            splits[split] = Split(np.stack(images), np.asarray(labels, dtype=np.int64),
                                  provenance)
    notes = []
    if listing.ignored:
        examples = ", ".join(listing.ignored[:3])
        notes.append(f"{len(listing.ignored)} entries outside the layout (not .png/.jpg/.jpeg "
                     f"in a split/class folder) ignored, e.g. {examples}")
    if num_resized:
        notes.append(f"{num_resized} images resized to 48x48 (allow_resize=True)")
    absent = {"train": "no train/ images", "val": "no val/ images or test/PublicTest_* images",
              "test": "no test/ images other than PublicTest_*"}
    rows_read = sum(len(entries) for entries in listing.images.values())
    data = _assemble(splits, absent, FOLDER_CONVENTION, source, rows_read, policy, notes)
    data.num_resized = num_resized
    return data


def _csv_split(table: PixelTable, rows: np.ndarray, display: str) -> Split:
    provenance = Provenance((display,), np.zeros(len(rows), dtype=np.int32), table.lines[rows])
    return Split(table.images[rows], table.labels[rows], provenance)


def _assemble(splits: dict[str, Split], absent: dict[str, str], convention: str, source: Path,
              rows_read: int, policy: ErrorPolicy, notes: list[str]) -> FER2013Data:
    """Drop empty splits, saying so, and build the result."""
    present = {name: splits[name] for name in SPLITS if name in splits and len(splits[name])}
    for name in SPLITS:
        if name not in present:
            hint = " (carve_test carves one from train)" if name == "test" else ""
            notes.append(f"{absent[name]}: no {name} split{hint}")
    return FER2013Data(splits=present, class_names=FER2013_CLASSES, split_convention=convention,
                       source=str(source), rows_read=rows_read, skipped=policy.skipped,
                       notes=[*notes, *policy.notes()])
