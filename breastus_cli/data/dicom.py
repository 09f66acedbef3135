"""Ultrasound DICOM: frames as luminance arrays, and the physical pixel size.

* MONOCHROME2 as is, MONOCHROME1 inverted; RGB and YBR_* converted to RGB, then luminance.
* Multi-frame files give one array per frame.
* Pixel size in mm from the Sequence of Ultrasound Regions (PhysicalDeltaX/Y, in cm when
  PhysicalUnitsX/YDirection is 3) or else Pixel Spacing (mm); None when neither is there.
* Size first: Rows, Columns, NumberOfFrames, SamplesPerPixel and BitsAllocated are read from the
  header, before the pixel data: a frame over ``max_pixels`` pixels, or a file whose frames
  decode to more than ``FRAMES_BUDGET x max_pixels`` bytes, is refused unread. A deflated file
  is inflated as a stream, never past that budget (pydicom alone inflates it whole).
"""

from __future__ import annotations

import math
import zlib
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np

from breastus_cli.data.imaging import DEFAULT_MAX_PIXELS, too_large
from breastus_cli.errors import RowError

_CM = 3  # DICOM PhysicalUnits code for centimetres
#: A DICOM's frames may decode to at most this many times ``max_pixels`` bytes in all.
FRAMES_BUDGET = 8
_PIXEL_DATA = 0x7FE00010
_HEADER_BYTES = 16 << 20  # most of a deflated file inflated to read what precedes the pixels
_TRAILER_BYTES = 1 << 20  # room for elements after the pixel data (padding)
_CHUNK_PIXELS = 1 << 22  # luminance conversion works on blocks of rows this large


def is_dicom(path: str | Path) -> bool:
    """``.dcm``/``.dicom`` suffix, or the 'DICM' marker after the 128-byte preamble."""
    path = Path(path)
    if path.suffix.lower() in (".dcm", ".dicom"):
        return True
    try:
        with open(path, "rb") as fh:
            head = fh.read(132)
    except OSError:
        return False
    return len(head) == 132 and head[128:132] == b"DICM"


def pixel_size_mm(dataset: object) -> float | None:
    """Physical size of one pixel in mm (the mean of x and y when they differ)."""
    regions = getattr(dataset, "SequenceOfUltrasoundRegions", None)
    if regions:
        for region in regions:
            dx, dy = getattr(region, "PhysicalDeltaX", None), getattr(region, "PhysicalDeltaY", None)
            ux = getattr(region, "PhysicalUnitsXDirection", None)
            uy = getattr(region, "PhysicalUnitsYDirection", None)
            if dx and ux == _CM:
                values = [abs(float(dx)) * 10.0]
                if dy and uy == _CM:
                    values.append(abs(float(dy)) * 10.0)
                return float(np.mean(values))
    spacing = getattr(dataset, "PixelSpacing", None)
    if spacing:
        try:
            return float(np.mean([float(v) for v in spacing]))
        except (TypeError, ValueError):
            return None
    return None


def _to_luminance(frame: np.ndarray, photometric: str, bits: int) -> np.ndarray:
    """Luminance of one frame, computed in float64 on blocks of rows (same numbers as on the
    whole frame, without whole-frame float64 copies)."""
    frame = np.asarray(frame)
    rgb_frame = frame.ndim == 3 and frame.shape[-1] == 3
    out = np.empty(frame.shape[:-1] if rgb_frame else frame.shape, dtype=np.uint8)
    step = max(1, _CHUNK_PIXELS // max(1, math.prod(frame.shape[1:])))
    if rgb_frame:
        top = float(frame.max())
        for start in range(0, frame.shape[0], step):
            rgb = frame[start:start + step].astype(np.float64)
            if top > 255:
                rgb = rgb / top * 255.0
            lum = rgb[..., 0] * 0.299 + rgb[..., 1] * 0.587 + rgb[..., 2] * 0.114
            out[start:start + step] = np.clip(np.rint(lum), 0, 255).astype(np.uint8)
        return out
    low, high = float(frame.min()), float(frame.max())
    for start in range(0, frame.shape[0], step):
        values = frame[start:start + step].astype(np.float64)
        if bits > 8 or high > 255 or low < 0:
            values = (values - low) / (high - low) * 255.0 if high > low else values * 0.0
        if photometric == "MONOCHROME1":  # 0 is white in MONOCHROME1
            values = 255.0 - values
        out[start:start + step] = np.clip(np.rint(values), 0, 255).astype(np.uint8)
    return out


def _number(dataset: Any, keyword: str, default: int) -> int:
    try:
        return int(float(str(getattr(dataset, keyword, default))))
    except (TypeError, ValueError):
        return default


def check_size(dataset: Any, max_pixels: int = DEFAULT_MAX_PIXELS) -> int:
    """Refuse (:class:`RowError`) a header whose frame or whole pixel data is over the caps;
    return the decoded size in bytes it announces (0 when Rows/Columns are missing)."""
    rows, columns = _number(dataset, "Rows", 0), _number(dataset, "Columns", 0)
    if rows <= 0 or columns <= 0:
        return 0  # nothing to decode; the decoder says what is wrong
    reason = too_large(columns, rows, max_pixels)
    if reason is not None:
        raise RowError(reason)
    frames = max(1, _number(dataset, "NumberOfFrames", 1))
    samples = max(1, _number(dataset, "SamplesPerPixel", 1))
    bits = max(1, _number(dataset, "BitsAllocated", 8))
    size = frames * rows * columns * samples * math.ceil(bits / 8)
    budget = FRAMES_BUDGET * max_pixels
    if size > budget:
        raise RowError(f"DICOM too large: {frames} frame(s) of {columns}x{rows} x {samples} "
                       f"sample(s) x {bits} bits = {size:,} bytes decoded, over the cap of "
                       f"{budget:,} ({FRAMES_BUDGET} x --max-pixels)")
    return size


def _inflate(fp: BinaryIO, inflater: Any, limit: int) -> bytes:
    """Up to ``limit`` more bytes of a raw deflate stream, read from ``fp`` a block at a time."""
    parts: list[bytes] = []
    got = 0
    while got < limit and not inflater.eof:
        data = inflater.unconsumed_tail or fp.read(1 << 16)
        if not data:
            break
        part = inflater.decompress(data, limit - got)
        parts.append(part)
        got += len(part)
    return b"".join(parts)


def _read_deflated(path: Path, max_pixels: int) -> Any:
    """A Deflated Explicit VR Little Endian file, inflated as a stream: first what precedes the
    pixel data (size checked), then at most the size it announces."""
    from pydicom.filebase import DicomBytesIO
    from pydicom.filereader import _read_file_meta_info, read_dataset, read_preamble

    found: list[bool] = []

    def at_pixels(tag: Any, vr: Any, length: int) -> bool:
        if int(tag) == _PIXEL_DATA:
            found.append(True)
        return bool(found)

    with open(path, "rb") as fp:
        read_preamble(fp, False)
        meta = _read_file_meta_info(fp)
        inflater = zlib.decompressobj(-zlib.MAX_WBITS)
        head = _inflate(fp, inflater, _HEADER_BYTES)
        buffer = DicomBytesIO(head)
        header = read_dataset(buffer, False, True, stop_when=at_pixels)
        if not found and not inflater.eof:  # what precedes the pixels fills the whole window
            raise RowError(f"deflated DICOM header over {len(head):,} bytes")
        announced = check_size(header, max_pixels)
        # the header, the pixel data element (12 bytes of tag, VR and length), its value, and
        # some room for trailing elements
        limit = buffer.tell() + 12 + announced + _TRAILER_BYTES
        body = head + _inflate(fp, inflater, max(0, limit - len(head)))
        if not inflater.eof or len(body) > limit:
            raise RowError(f"deflated DICOM inflates to more than {limit:,} bytes, more than "
                           "its header announces")
    dataset = read_dataset(DicomBytesIO(body), False, True)
    dataset.file_meta = meta
    dataset.set_original_encoding(False, True)
    return dataset


def read_dicom(path: str | Path,
               max_pixels: int = DEFAULT_MAX_PIXELS) -> tuple[list[np.ndarray], float | None]:
    """All frames of a DICOM file as uint8 luminance arrays, and the pixel size in mm.

    The size is checked from the header first (:func:`check_size`): :class:`RowError` naming it
    and the cap, before any pixel is read or inflated."""
    import pydicom
    from pydicom.errors import InvalidDicomError
    from pydicom.filereader import read_file_meta_info
    from pydicom.uid import DeflatedExplicitVRLittleEndian

    path = Path(path)
    try:
        try:
            deflated = read_file_meta_info(path).get("TransferSyntaxUID") == \
                DeflatedExplicitVRLittleEndian
        except InvalidDicomError:
            deflated = False  # no preamble: pydicom decides below, as before
        if deflated:
            dataset = _read_deflated(path, max_pixels)
        else:
            check_size(pydicom.dcmread(path, stop_before_pixels=True, defer_size=1 << 20),
                       max_pixels)
            dataset = pydicom.dcmread(path)
    except RowError as err:
        raise RowError(err.message, hint=path.name) from None
    except (InvalidDicomError, OSError, EOFError, ValueError, zlib.error) as exc:
        raise RowError(f"unreadable DICOM ({type(exc).__name__}: {exc})", hint=path.name) from None
    if "PixelData" not in dataset:
        raise RowError("DICOM without pixel data", hint=path.name)
    try:
        pixels = dataset.pixel_array
    except Exception as exc:  # missing decoder plug-ins, corrupt pixel data
        raise RowError(f"cannot decode DICOM pixels ({type(exc).__name__}: {exc})",
                       hint=path.name) from None
    photometric = str(getattr(dataset, "PhotometricInterpretation", "MONOCHROME2"))
    samples = int(getattr(dataset, "SamplesPerPixel", 1))
    frames_count = int(getattr(dataset, "NumberOfFrames", 1) or 1)
    if photometric.startswith("YBR") and samples == 3:
        from pydicom.pixels import convert_color_space

        pixels = convert_color_space(pixels, photometric, "RGB")
        photometric = "RGB"
    frames = list(pixels) if frames_count > 1 else [pixels]
    bits = int(getattr(dataset, "BitsStored", 8) or 8)
    return [_to_luminance(f, photometric, bits) for f in frames], pixel_size_mm(dataset)
