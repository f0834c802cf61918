"""A folder of images with ``captions.csv`` (Flickr8k's layout), or precomputed features.

``captions.csv`` has a header with the columns ``image`` (a file name relative to the
folder) and ``caption``, one row per caption, several rows per image. Images keep the order
of their first row. Each image is cropped to a centred square and resized (Pillow's
``ImageOps.fit``) on load; an image that is missing or that Pillow cannot read is named in a
list and skipped, with its captions, and the caller reports the count.

Pillow's decoders raise many kinds of exception on a damaged file (``OSError``, ``SyntaxError``,
``struct.error``, ``DecompressionBombError``, ...), so every exception of reading one image
counts as "not a readable image"; an image over Pillow's size limit (a decompression bomb)
is one of them.

Precomputed features are one ``.npy`` array of shape (images, F): row ``i`` belongs to the
``i``-th distinct image of ``captions.csv`` (the order :func:`read_captions` returns), so
any network's outputs can stand in for the project's encoder.
"""

from __future__ import annotations

import random
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps

from rnnkit.data.files import DataError
from rnnkit.data.tables import TableError, read_table

CAPTIONS_FILE = "captions.csv"


class ImageDataError(DataError):
    """Images or features that cannot be used; the message names the file and the problem."""


@dataclass
class ImageFolder:
    """The images of a folder that could be read, resized, with their captions."""

    folder: Path
    names: list[str]  # file names relative to the folder, in captions.csv order
    pixels: np.ndarray  # uint8 (N, S, S, 3); (N, 0, 0, 3) when only features are used
    references: list[list[str]]  # the captions of each image
    bad: list[str]  # "name: why" for each image skipped

    def __len__(self) -> int:
        return len(self.names)


def read_captions(folder: str | Path) -> tuple[list[str], list[list[str]]]:
    """Distinct image names in order of first appearance and the captions of each."""
    path = Path(folder) / CAPTIONS_FILE
    if not path.is_file():
        raise FileNotFoundError(f"{folder}: no {CAPTIONS_FILE} (columns image,caption)")
    table = read_table(path, delimiter=",")
    images, texts = table.column("image"), table.column("caption")
    grouped: dict[str, list[str]] = {}
    for row, (name, text) in enumerate(zip(images, texts, strict=True)):
        if not name.strip() or not text.strip():
            raise TableError(
                f"{table.where(row, 'image' if not name.strip() else 'caption')}: empty"
            )
        grouped.setdefault(name.strip(), []).append(text.strip())
    return list(grouped), list(grouped.values())


def load_image(path: Path, side: int) -> tuple[np.ndarray | None, str]:
    """uint8 (side, side, 3) pixels, or (None, why it could not be read)."""
    if not path.is_file():
        return None, "missing"
    try:
        with Image.open(path) as image:
            image.load()
            square = ImageOps.fit(image.convert("RGB"), (side, side), Image.Resampling.BILINEAR)
    except Exception as err:  # any exception of a damaged file: see the module docstring
        return None, f"not a readable image ({type(err).__name__}: {err})"
    return np.asarray(square, dtype=np.uint8), ""


def load_folder(folder: str | Path, side: int, with_pixels: bool = True) -> ImageFolder:
    """Read captions.csv and (``with_pixels``) every image it names; skip the bad ones."""
    folder = Path(folder)
    names, references = read_captions(folder)
    kept, pixels, refs, bad = [], [], [], []
    for name, captions in zip(names, references, strict=True):
        image, why = load_image(folder / name, side) if with_pixels else (None, "")
        if why:
            bad.append(f"{name}: {why}")
            continue
        kept.append(name)
        pixels.append(image)
        refs.append(captions)
    if not kept:
        raise ImageDataError(f"{folder}: none of the {len(names)} images could be read ({bad[0]})")
    array = np.stack(pixels) if with_pixels else np.zeros((len(kept), 0, 0, 3), np.uint8)
    return ImageFolder(folder, kept, array, refs, bad)


def bad_images_summary(bad: list[str], shown: int = 5) -> str:
    """One line for the user: how many images were skipped, and the first few."""
    more = f", and {len(bad) - shown} more" if len(bad) > shown else ""
    return f"skipped {len(bad)} image(s) that could not be read: " + "; ".join(bad[:shown]) + more


def load_features(path: str | Path, rows: int | None = None) -> np.ndarray:
    """float32 (N, F) feature rows from a ``.npy`` file; ``rows`` checks N."""
    path = Path(path)
    if not path.is_file():
        raise ImageDataError(f"{path}: no such feature file")
    try:
        array = np.load(path, allow_pickle=False)
    except (ValueError, OSError, EOFError, zipfile.BadZipFile) as err:
        raise ImageDataError(f"{path}: not a .npy array of numbers ({err})") from None
    if not isinstance(array, np.ndarray):  # an .npz archive
        array.close()
        raise ImageDataError(f"{path}: an .npz archive, not one .npy array")
    array = array[None] if array.ndim == 1 else array
    if array.ndim != 2 or array.dtype.kind not in "biuf":
        raise ImageDataError(
            f"{path}: expected a (images, features) array of numbers, got {array.dtype} "
            f"{array.shape}"
        )
    if rows is not None and array.shape[0] != rows:
        raise ImageDataError(
            f"{path}: {array.shape[0]} feature rows for {rows} images in captions.csv"
        )
    if not np.isfinite(array).all():
        raise ImageDataError(f"{path}: feature rows hold NaN or infinite values")
    return array.astype(np.float32)


def split_images(count: int, val_fraction: float, test_fraction: float, seed: int):
    """(train, val, test) image indices, a seeded random split by image."""
    order = list(range(count))
    random.Random(seed).shuffle(order)
    n_test, n_val = round(count * test_fraction), round(count * val_fraction)
    test, val, train = order[:n_test], order[n_test : n_test + n_val], order[n_test + n_val :]
    if not train or not val:
        raise ValueError(f"{count} images leave an empty train or validation split")
    return sorted(train), sorted(val), sorted(test)
