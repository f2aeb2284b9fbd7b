"""File I/O every stage shares: atomic writes, safe image/mask/npz readers, id checks.

Every reader raises :class:`DataError` with a one-line message that names the
file; every writer writes a temporary file beside the target and renames it, so
an interrupted process never leaves a truncated result behind.
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import tempfile
import zipfile
from pathlib import Path
from typing import Any, Iterator

import numpy as np
from PIL import Image, UnidentifiedImageError


class DataError(ValueError):
    """Bad input data; the message names the offending file or id."""


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike, suffix: str | None = None) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; rename it onto ``path`` on success.

    The temporary name keeps the target's suffix (libraries choose the format
    from it) and starts with '.', so directory scans that look for finished
    files never see it.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    suffix = path.suffix if suffix is None else suffix
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=f".tmp{suffix}", dir=path.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        os.replace(tmp_path, path)
    finally:
        if tmp_path.exists():
            tmp_path.unlink()


def remove_stale_temps(directory: str | os.PathLike) -> int:
    """Delete temporary files a killed process left behind (ours start with '.' and hold '.tmp')."""
    d = Path(directory)
    if not d.is_dir():
        return 0
    n = 0
    for p in d.glob(".*.tmp*"):
        if p.is_file():
            p.unlink(missing_ok=True)
            n += 1
    return n


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: str | os.PathLike, obj: Any) -> None:
    atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=False) + "\n")


def read_json(path: str | os.PathLike) -> Any:
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: file not found")
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise DataError(f"{path}: not valid JSON ({e})") from None


# --------------------------------------------------------------------------
# ids
# --------------------------------------------------------------------------
_ID_RE = re.compile(r"^[A-Za-z0-9_.\-]+$")


def validate_id(image_id: str, source: str | os.PathLike = "") -> str:
    """An image id is a bare file stem: no separators, no '..', no odd characters."""
    if not isinstance(image_id, str) or not _ID_RE.match(image_id) or image_id in (".", "..") or ".." in image_id:
        where = f" in {source}" if source else ""
        raise DataError(f"invalid image id {image_id!r}{where}: ids must be file stems (letters, digits, '_', '-', '.'), no paths")
    return image_id


def read_id_list(path: str | os.PathLike) -> list[str]:
    """A split list: one id per line (VOC's ImageSets format); ids stay strings."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: split list not found")
    ids = []
    with open(path, encoding="utf-8") as f:
        for line in f:
            line = line.strip()
            if not line:
                continue
            # VOC's per-class lists carry a second column; keep the id
            ids.append(validate_id(line.split()[0], path))
    if not ids:
        raise DataError(f"{path}: split list is empty")
    return ids


def write_id_list(path: str | os.PathLike, ids: list[str]) -> None:
    for i in ids:
        validate_id(i, path)
    atomic_write_text(path, "".join(f"{i}\n" for i in ids))


# --------------------------------------------------------------------------
# images and masks
# --------------------------------------------------------------------------
def read_image(path: str | os.PathLike) -> np.ndarray:
    """An RGB uint8 array [H, W, 3]; grayscale, CMYK, RGBA and palette images are converted."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: image file not found")
    try:
        with Image.open(path) as im:
            im.load()
            if im.mode != "RGB":
                if im.mode in ("RGBA", "LA") or (im.mode == "P" and "transparency" in im.info):
                    # composite on black rather than dropping alpha arbitrarily
                    im = im.convert("RGBA")
                    bg = Image.new("RGB", im.size, (0, 0, 0))
                    bg.paste(im, mask=im.split()[-1])
                    im = bg
                else:
                    im = im.convert("RGB")
            return np.asarray(im, dtype=np.uint8).copy()
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as e:
        raise DataError(f"{path}: unreadable image ({type(e).__name__}: {e})") from None


def read_mask(path: str | os.PathLike, num_classes: int | None = None) -> np.ndarray:
    """A label mask as uint8 [H, W]: palette or grayscale PNG of class indices.

    With ``num_classes`` (foreground K), values must lie in {0..K, 255}.
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: mask file not found")
    try:
        with Image.open(path) as im:
            im.load()
            if im.mode not in ("P", "L"):
                raise DataError(f"{path}: mask must be a palette or grayscale PNG of class indices, got mode {im.mode}")
            mask = np.asarray(im, dtype=np.uint8).copy()
    except DataError:
        raise
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as e:
        raise DataError(f"{path}: unreadable mask ({type(e).__name__}: {e})") from None
    if num_classes is not None:
        bad = (mask > num_classes) & (mask != 255)
        if bad.any():
            vals = sorted(set(np.unique(mask[bad]).tolist()))[:5]
            raise DataError(f"{path}: mask values {vals} outside {{0..{num_classes}, 255}}")
    return mask


def voc_palette(n: int = 256) -> list[int]:
    """The PASCAL VOC colour map (bit-interleaved), flat [r, g, b, ...] for 256 entries."""
    pal = []
    for i in range(n):
        r = g = b = 0
        c = i
        for j in range(8):
            r |= ((c >> 0) & 1) << (7 - j)
            g |= ((c >> 1) & 1) << (7 - j)
            b |= ((c >> 2) & 1) << (7 - j)
            c >>= 3
        pal.extend([r, g, b])
    return pal


_PALETTE = voc_palette()


def write_palette_png(path: str | os.PathLike, mask: np.ndarray) -> None:
    """Write a uint8 label mask as a VOC-palette PNG (viewable; 255 stays 255), atomically."""
    mask = np.asarray(mask)
    if mask.ndim != 2:
        raise ValueError(f"{path}: mask must be 2-D, got shape {mask.shape}")
    im = Image.fromarray(mask.astype(np.uint8), mode="P")
    im.putpalette(_PALETTE)
    with atomic_path(path) as tmp:
        im.save(tmp, format="PNG")


def write_gray_png(path: str | os.PathLike, mask: np.ndarray) -> None:
    """Raw class indices in a grayscale PNG (the VOC evaluation server's format)."""
    im = Image.fromarray(np.asarray(mask).astype(np.uint8), mode="L")
    with atomic_path(path) as tmp:
        im.save(tmp, format="PNG")


def write_image(path: str | os.PathLike, image: np.ndarray, quality: int = 95) -> None:
    im = Image.fromarray(np.asarray(image, dtype=np.uint8))
    path = Path(path)
    fmt = "JPEG" if path.suffix.lower() in (".jpg", ".jpeg") else "PNG"
    with atomic_path(path) as tmp:
        if fmt == "JPEG":
            im.save(tmp, format=fmt, quality=quality)
        else:
            im.save(tmp, format=fmt)


# --------------------------------------------------------------------------
# npz (pickle-free)
# --------------------------------------------------------------------------
def save_npz(path: str | os.PathLike, **arrays: np.ndarray) -> None:
    """Write an uncompressed npz atomically; object arrays are refused."""
    for k, v in arrays.items():
        if np.asarray(v).dtype == object:
            raise ValueError(f"{path}: array {k!r} has dtype object (would need pickle)")
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as f:
            np.savez(f, **arrays)


def load_npz(path: str | os.PathLike, required: tuple[str, ...] = ()) -> dict[str, np.ndarray]:
    """Read every array of an npz without pickle; missing keys or pickled arrays -> DataError."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: file not found")
    try:
        with np.load(path, allow_pickle=False) as z:
            out = {k: z[k] for k in z.files}
    except ValueError as e:
        if "pickle" in str(e).lower():
            raise DataError(f"{path}: refused: holds pickled objects (we never unpickle)") from None
        raise DataError(f"{path}: unreadable npz ({e})") from None
    except (OSError, zipfile.BadZipFile, EOFError) as e:
        raise DataError(f"{path}: unreadable npz ({type(e).__name__}: {e})") from None
    missing = [k for k in required if k not in out]
    if missing:
        raise DataError(f"{path}: missing key(s) {missing} (has {sorted(out)})")
    return out


def file_sha256(path: str | os.PathLike) -> str:
    """The SHA-256 of a file's bytes, read in 1 MiB blocks."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()
