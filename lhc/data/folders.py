"""Read FER2013 from image folders in Kaggle's ``train/<emotion>/*`` + ``test/<emotion>/*`` layout.

Split rule: ``train/`` feeds ``train``; a ``val/`` (or ``validation/``) folder, when present,
feeds ``val``; in ``test/``, file names starting ``PublicTest_`` feed ``val``, and all other
files (``PrivateTest_*`` and names without either prefix) feed ``test``. Top-level names are
matched case-insensitively. Class folders are matched case-insensitively with the usual
synonyms (anger/angry, happiness/happy, ...). Images are decoded with Pillow, converted to
grey when stored in colour, and must be 48x48 unless ``allow_resize`` is set.
"""

from __future__ import annotations

import dataclasses
import io
from collections.abc import Callable
from pathlib import Path

import numpy as np

from lhc.data.dataset import IMAGE_SIZE, DataError

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")
SPLIT_FOLDERS = {"train": "train", "training": "train", "val": "val", "validation": "val",
                 "test": "test"}
CLASS_FOLDERS = {
    "angry": 0, "anger": 0,
    "disgust": 1, "disgusted": 1,
    "fear": 2, "fearful": 2,
    "happy": 3, "happiness": 3,
    "sad": 4, "sadness": 4,
    "surprise": 5, "surprised": 5,
    "neutral": 6,
}
FOLDER_CONVENTION = ("train/ -> train; val/ -> val; test/PublicTest_* -> val; "
                     "test/PrivateTest_* and other test/ files -> test")


@dataclasses.dataclass
class ImageListing:
    """The files of an image-folder layout, before decoding.

    Attributes:
        images: per split, ``(relative path, label)`` of each image file, sorted by path;
            the label is None in a class folder whose name is no FER2013 class.
        ignored: relative paths of files and folders that are not part of the layout.
    """

    images: dict[str, list[tuple[str, int | None]]]
    ignored: list[str]


def is_image_layout(root: Path) -> bool:
    """True when ``root`` holds a ``train/`` or ``test/`` folder (any case)."""
    return any(child.is_dir() and child.name.lower() in ("train", "test")
               for child in root.iterdir())


def list_image_folders(root: Path) -> ImageListing:
    """List the image files of the layout under ``root`` with their split and label."""
    images: dict[str, list[tuple[str, int | None]]] = {"train": [], "val": [], "test": []}
    ignored = []
    for split_dir in sorted(root.iterdir()):
        folder_split = SPLIT_FOLDERS.get(split_dir.name.lower()) if split_dir.is_dir() else None
        if folder_split is None:
            ignored.append(split_dir.name)
            continue
        for class_dir in sorted(split_dir.iterdir()):
            relative_dir = class_dir.relative_to(root).as_posix()
            if not class_dir.is_dir():
                ignored.append(relative_dir)
                continue
            label = CLASS_FOLDERS.get(class_dir.name.lower())
            for file in sorted(class_dir.iterdir()):
                relative = file.relative_to(root).as_posix()
                if not (file.is_file() and file.suffix.lower() in IMAGE_SUFFIXES):
                    ignored.append(relative)
                else:
                    images[_image_split(folder_split, file.name)].append((relative, label))
    return ImageListing(images, ignored)


def decode_image(data: bytes, file: str, allow_resize: bool,
                 record: Callable[[DataError], None]) -> tuple[np.ndarray | None, bool]:
    """Decode one image file to a uint8 ``(48, 48)`` grey array.

    Args:
        data: the file's bytes.
        file: its name for errors.
        allow_resize: resize other sizes to 48x48 (bilinear, antialiased) instead of failing.
        record: called with the error of an undecodable or wrongly sized image.

    Returns:
        The image (None when it was recorded as an error) and whether it was resized.
    """
    # Imported here, not at the top: reading a CSV or a data pack needs no image codec, and
    # the GPU machine that unpacks the data has none.
    from PIL import Image

    try:
        with Image.open(io.BytesIO(data)) as image:
            image.load()  # decode now, so that a truncated file fails here
            grey = image.convert("L")
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as error:
        record(DataError(file, None, "a decodable PNG or JPEG image",
                         f"{type(error).__name__}: {error}"))
        return None, False
    resized = grey.size != (IMAGE_SIZE, IMAGE_SIZE)
    if resized:
        if not allow_resize:
            # One message for the API and the command line, which has the flag in data-report.
            record(DataError(file, None, "a 48x48 image (pass allow_resize=True to resize, or "
                                         "--allow-resize to lhc data-report)",
                             f"{grey.size[0]}x{grey.size[1]}"))
            return None, False
        grey = grey.resize((IMAGE_SIZE, IMAGE_SIZE), Image.Resampling.BILINEAR)
    return np.asarray(grey, dtype=np.uint8), resized


def unknown_class_error(image_file: str) -> DataError:
    """The error for an image in a class folder whose name is no FER2013 class."""
    names = "/".join(sorted(CLASS_FOLDERS))
    return DataError(image_file, None, f"a class folder named one of {names} (any case)",
                     f"class folder {Path(image_file).parent.name!r}")


def _image_split(folder_split: str, file_name: str) -> str:
    if folder_split == "test" and file_name.lower().startswith("publictest_"):
        return "val"
    return folder_split
