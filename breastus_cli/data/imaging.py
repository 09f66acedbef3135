"""Decoding ultrasound images and lesion masks into plain numpy arrays.

The rules (design.md, "Data rules") live here and nowhere else:

* RGBA, LA and palette images with transparency are composited on **black** before anything
  else: BrEaST has images whose RGB under alpha 0 is not black, and a plain ``convert('RGB')``
  would show pixels that were meant to be hidden.
* The result is one luminance channel (ITU-R 601, as PIL's ``convert('L')``), ``uint8``.
  Models replicate it to 3 channels for ImageNet backbones.
* 16-bit and float images are scaled to 0..255 by the image's own maximum (ultrasound exports
  rarely use the full 16-bit range).
* EXIF orientation is honoured.
* Masks: each listed file is read as luminance and binarized at > 127; several files are united.
* Size first: an image's width x height is read from its header and checked against
  ``max_pixels`` (``--max-pixels``, default :data:`DEFAULT_MAX_PIXELS`) before any pixel is
  decoded; a larger one is a :class:`RowError` naming its size and the cap.
"""

from __future__ import annotations

import contextlib
import functools
import warnings
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from breastus_cli.errors import RowError

#: File suffixes treated as images when scanning folders.
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff")

#: Most pixels an image (a DICOM frame) may have before it is refused, unread: ultrasound frames
#: are around 1 MP, so anything beyond is a decompression bomb, not a scan. ``--max-pixels``.
DEFAULT_MAX_PIXELS = 50_000_000

# Every image breastus decodes goes through open_image, whose size check runs right after the
# header is read. PIL's own bomb check runs earlier, inside Image.open, and would answer first
# (with its own message, whatever --max-pixels says) for any image over twice its limit: it is
# off, so that there is one check and one message. open_image still catches its error.
Image.MAX_IMAGE_PIXELS = None


def too_large(width: int, height: int, max_pixels: int) -> str | None:
    """The refusal reason for a ``width`` x ``height`` image over ``max_pixels``, else None."""
    pixels = int(width) * int(height)
    if pixels <= max_pixels:
        return None
    return (f"image too large: {width}x{height} = {pixels:,} pixels, over the cap of "
            f"{max_pixels:,} (--max-pixels)")


def open_image(path: str | Path, max_pixels: int = DEFAULT_MAX_PIXELS) -> Image.Image:
    """Open and fully load an image file, turning every decoder failure into :class:`RowError`;
    an image over ``max_pixels`` is refused from its header, before it is decoded."""
    path = Path(path)
    if not path.exists():
        raise RowError("file not found", hint=path.name)
    if not path.is_file():
        raise RowError("not a file", hint=path.name)
    if path.stat().st_size == 0:
        raise RowError("empty file", hint=path.name)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            image = Image.open(path)  # reads the header only
            reason = too_large(image.width, image.height, max_pixels)
            if reason is not None:
                image.close()
                raise RowError(reason, hint=path.name)
            image.load()
    except UnidentifiedImageError:
        raise RowError("not an image (unrecognised format)", hint=path.name) from None
    except Image.DecompressionBombError as exc:  # only if someone turned PIL's check back on
        raise RowError(f"image too large: {exc}", hint=path.name) from None
    except (OSError, SyntaxError, ValueError) as exc:
        raise RowError(f"corrupt image ({exc})", hint=path.name) from None
    return image


def to_luminance(image: Image.Image) -> np.ndarray:
    """Convert a loaded PIL image to a ``uint8`` luminance array following the data rules."""
    image = ImageOps.exif_transpose(image) or image
    mode = image.mode
    if mode == "P":
        image = image.convert("RGBA") if "transparency" in image.info else image.convert("RGB")
        mode = image.mode
    if mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        rgba = image.convert("RGBA")
        black = Image.new("RGBA", rgba.size, (0, 0, 0, 255))
        image = Image.alpha_composite(black, rgba).convert("RGB")
        mode = "RGB"
    if mode in ("I;16", "I;16B", "I;16L", "I;16N", "I", "F"):
        array = np.asarray(image, dtype=np.float64)
        if array.ndim == 3:  # never seen, but keep luminance semantics
            array = array.mean(axis=2)
        low = min(float(array.min()), 0.0)
        high = float(array.max())
        if high <= low:
            return np.zeros(array.shape, dtype=np.uint8)
        scaled = (array - low) / (high - low) * 255.0
        return np.clip(np.rint(scaled), 0, 255).astype(np.uint8)
    if mode != "L":
        image = image.convert("L")
    return np.asarray(image, dtype=np.uint8).copy()


@functools.cache
def _cv2():
    """OpenCV, imported on first use (``breastus --help`` stays instant), one thread per call:
    breastus decodes several files at once in its own threads. Its log is silenced: on a
    broken file it writes "[ WARN:...] global grfmt_png.cpp ..." to the terminal, while
    breastus names the problem itself (the PIL fallback's reason, one line)."""
    import cv2

    cv2.setNumThreads(1)
    with contextlib.suppress(AttributeError):  # 0 = LOG_LEVEL_SILENT
        cv2.setLogLevel(0)
    return cv2


#: PIL modes of 8-bit PNGs that OpenCV decodes to the same luminance (see :func:`_fast_png`)
_FAST_MODES = ("L", "RGB", "RGBA")


def _fast_png(path: Path, max_pixels: int) -> np.ndarray | None:
    """An 8-bit grey, RGB or RGBA PNG decoded by OpenCV, to exactly the pixels of
    :func:`to_luminance` (about half its CPU cost, and OpenCV releases the GIL so decoding
    threads overlap); None for every file it is not sure about, which then takes the PIL path:
    other formats and modes (palette, grey+alpha, 16-bit), a transparency chunk, EXIF (an
    orientation to honour), or anything OpenCV cannot decode (PIL names the problem).

    Exactness, checked over every (value, alpha) pair in tests: OpenCV's premultiplication
    (``RGBA2mRGBA``) is PIL's alpha composite on opaque black; the luminance is then PIL's own
    ``convert('L')`` (OpenCV's ``RGB2GRAY`` rounds differently on about 0.1% of pixels).
    """
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            with Image.open(path) as header:  # the header only: size, mode, chunks before IDAT
                if header.format != "PNG" or header.mode not in _FAST_MODES \
                        or "transparency" in header.info or "exif" in header.info \
                        or too_large(header.width, header.height, max_pixels):
                    return None
        raw = path.read_bytes()
    except (OSError, SyntaxError, ValueError, UnidentifiedImageError,
            Image.DecompressionBombError):
        return None
    if raw.find(b"eXIf") >= 0:
        return None  # an EXIF chunk after the image data: PIL honours its orientation
    cv2 = _cv2()
    array = cv2.imdecode(np.frombuffer(raw, dtype=np.uint8), cv2.IMREAD_UNCHANGED)
    if array is None or array.dtype != np.uint8:
        return None
    if array.ndim == 2:
        return array
    if array.shape[2] == 4:  # on black, as PIL's alpha_composite; then BGRA -> RGB
        array = cv2.cvtColor(cv2.cvtColor(array, cv2.COLOR_RGBA2mRGBA), cv2.COLOR_BGRA2RGB)
    elif array.shape[2] == 3:
        array = cv2.cvtColor(array, cv2.COLOR_BGR2RGB)
    else:
        return None
    return np.asarray(Image.fromarray(array, "RGB").convert("L"))


def read_luminance(path: str | Path, max_pixels: int = DEFAULT_MAX_PIXELS) -> np.ndarray:
    """Decode an image file to a ``uint8`` (H, W) luminance array (:class:`RowError` if it has
    more than ``max_pixels`` pixels, before decoding). 8-bit PNGs decode through OpenCV
    (:func:`_fast_png`), every other file through PIL, to the same pixels.

    >>> read_luminance("case001.png").shape  # doctest: +SKIP
    (433, 599)
    """
    fast = _fast_png(Path(path), max_pixels) if str(path).lower().endswith(".png") else None
    return fast if fast is not None else to_luminance(open_image(path, max_pixels))


def read_mask(paths: Sequence[str | Path], shape: tuple[int, int] | None = None,
              max_pixels: int = DEFAULT_MAX_PIXELS) -> np.ndarray:
    """Read one or several mask files and return their union as a boolean (H, W) array.

    Each file is converted to luminance (alpha ignored, as BrEaST's masks are 255/255 on 0)
    and binarized at > 127. With ``shape``, every mask must have that (H, W) size, else
    :class:`RowError` ("mask size differs from image"); none may exceed ``max_pixels``.
    """
    if not paths:
        raise RowError("no mask file")
    union: np.ndarray | None = None
    for path in paths:
        image = open_image(path, max_pixels)
        image = ImageOps.exif_transpose(image) or image
        if image.mode in ("I;16", "I;16B", "I;16L", "I;16N", "I", "F"):
            array = np.asarray(image, dtype=np.float64)
            high = float(array.max()) or 1.0
            gray = array / high * 255.0
        else:
            gray = np.asarray(image.convert("L"))
        binary = gray > 127
        if shape is not None and binary.shape != tuple(shape):
            raise RowError(
                f"mask size differs from image ({binary.shape[1]}x{binary.shape[0]} vs "
                f"{shape[1]}x{shape[0]})",
                hint=Path(path).name,
            )
        if union is None:
            union = binary
        elif union.shape != binary.shape:
            raise RowError("masks of one case have different sizes", hint=Path(path).name)
        else:
            union |= binary
    assert union is not None
    return union


def save_png(array: np.ndarray, path: str | Path) -> None:
    """Save a uint8 or boolean (H, W) array as an 8-bit PNG (booleans as 0/255)."""
    if array.dtype == bool:
        array = array.astype(np.uint8) * 255
    Image.fromarray(np.ascontiguousarray(array.astype(np.uint8))).save(path, format="PNG", optimize=False)


def resize_grey(image: np.ndarray, size: int) -> np.ndarray:
    """The one resize of a luminance image to the model's (size, size) input, used by the
    training cache, evaluate and predict alike (no train/serve skew): PIL bilinear, which
    widens its filter when shrinking (antialiased). Measured against the former
    ``tf.image.resize(antialias=True)``: within 1 grey level (mean 0.12) at a quarter of the
    CPU cost. ``image``: (H, W) uint8 (other dtypes are rounded and clipped to 0..255)."""
    array = np.asarray(image)
    if array.ndim == 3:
        array = array[..., 0]
    if array.dtype != np.uint8:
        array = np.clip(np.rint(array), 0, 255).astype(np.uint8)
    if array.shape == (size, size):
        return array.copy()
    return np.asarray(Image.fromarray(array, "L").resize((int(size), int(size)),
                                                         Image.BILINEAR))


def read_resized(path: str | Path, size: int) -> np.ndarray:
    """A prepared dataset's image decoded by :func:`read_luminance` (the decoder evaluate and
    predict use) and resized by :func:`resize_grey`: (S, S, 1). Runs inside the training
    pipeline, whose error carries only the message: a missing file raises the OS's
    ``FileNotFoundError`` naming the whole path, any other problem names the path too."""
    try:
        return resize_grey(read_luminance(path), size)[..., None]
    except RowError as exc:
        if not Path(path).exists():
            import errno

            raise FileNotFoundError(errno.ENOENT, "No such file or directory", str(path)) \
                from None
        raise ValueError(f"{path}: {exc.message}") from None
