"""Ultrasound DICOM: frames as luminance arrays, and the physical pixel size.

* MONOCHROME1/2: pydicom's Modality LUT (or rescale) then VOI (LUT or window) when present,
  mapped to 0..255 from their declared output range, one scale per file (never the frame's
  own min/max); MONOCHROME1 inverted. RGB and YBR_* converted to RGB, then luminance.
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
from collections.abc import Callable
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


def _given(value: Any) -> bool:
    """An element value that is there and not empty (0 counts)."""
    if value is None:
        return False
    try:
        return len(value) > 0
    except TypeError:  # a number
        return True


def _voi_kind(dataset: Any) -> str | None:
    """'lut' (a usable VOI LUT Sequence, preferred), 'window' (Window Center and Width) or None,
    the choice pydicom's ``apply_voi_lut(prefer_lut=True)`` makes."""
    sequence = dataset.get("VOILUTSequence")
    if sequence and _given(sequence[0].get("LUTDescriptor")) and \
            _given(sequence[0].get("LUTData")):
        return "lut"
    if _given(dataset.get("WindowCenter")) and _given(dataset.get("WindowWidth")):
        return "window"
    return None


def _output_range(dataset: Any, windowing: bool, modality: bool = True) -> tuple[float, float]:
    """The values the Modality LUT (or rescale) step can output, as pydicom 3's
    ``apply_windowing`` computes them: the Modality LUT's entry depth, else the stored range
    (BitsStored, signed by PixelRepresentation) times RescaleSlope plus RescaleIntercept.
    (pydicom also rescales a Modality LUT's range when windowing; without a window the LUT's
    own range is kept, as ``apply_modality_lut`` ignores rescale when there is a LUT.)
    ``modality=False``: the stored range alone."""
    lut = dataset.get("ModalityLUTSequence") if modality else None
    bits = _number(dataset, "BitsStored", 8)
    if lut:
        low, high = 0.0, float(2 ** int(lut[0].LUTDescriptor[2]) - 1)
    elif _number(dataset, "PixelRepresentation", 0) == 0:
        low, high = 0.0, float(2 ** bits - 1)
    else:
        low, high = float(-(2 ** (bits - 1))), float(2 ** (bits - 1) - 1)
    slope, intercept = dataset.get("RescaleSlope"), dataset.get("RescaleIntercept")
    if modality and slope is not None and intercept is not None and (windowing or not lut):
        low, high = low * float(slope) + float(intercept), high * float(slope) + float(intercept)
    return float(low), float(high)


def _grey_scale(dataset: Any, photometric: str) -> Callable[[np.ndarray], np.ndarray]:
    """A function from a block of stored monochrome values to float grey levels 0..255.

    pydicom's ``apply_modality_lut`` (Modality LUT, or RescaleSlope/Intercept), then its
    ``apply_voi_lut`` when the file has a VOI (the VOI LUT Sequence preferred, else the first
    Window Center/Width), mapped to 0..255 from that step's declared output range: the LUT's
    entry depth, or for windowing the range pydicom writes (:func:`_output_range`). Without a
    VOI the whole stored range (after the Modality LUT or rescale) maps to 0..255: an 8-bit
    unsigned file stays as it is, and deeper files get one fixed scale, the same for every
    frame and every file of that depth, so one tissue keeps one grey level across the frames
    of a cine loop and across files (a per-frame min-max stretch would give it a different
    grey in each frame, depending on what else is in view). Other one-sample photometrics get
    the stored range alone."""
    from pydicom.pixels import apply_modality_lut, apply_voi_lut

    monochrome = photometric in ("MONOCHROME1", "MONOCHROME2")
    kind = _voi_kind(dataset) if monochrome else None
    if kind == "lut":
        low, high = 0.0, float(2 ** int(dataset.VOILUTSequence[0].LUTDescriptor[2]) - 1)
    else:
        low, high = _output_range(dataset, windowing=kind == "window", modality=monochrome)

    def scale(block: np.ndarray) -> np.ndarray:
        values = apply_modality_lut(block, dataset) if monochrome else block
        if kind == "lut" and not np.issubdtype(values.dtype, np.integer):
            values = np.rint(values).astype(np.int64)  # a LUT is indexed by whole numbers
        if kind is not None:
            values = apply_voi_lut(values, dataset, index=0, prefer_lut=True)
        values = np.asarray(values, dtype=np.float64)
        if high == low:
            return np.zeros_like(values)
        return (values - low) * (255.0 / (high - low))

    return scale


def _to_luminance(frame: np.ndarray, photometric: str, dataset: Any) -> np.ndarray:
    """Luminance of one frame, computed in float64 on blocks of rows (same numbers as on the
    whole frame, without whole-frame float64 copies). Monochrome grey levels come from the
    file's own intensity transforms (:func:`_grey_scale`), never from the frame's min/max;
    MONOCHROME1 is inverted after them."""
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
    scale = _grey_scale(dataset, photometric)
    for start in range(0, frame.shape[0], step):
        values = scale(frame[start:start + step])
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
    try:
        grey = [_to_luminance(f, photometric, dataset) for f in frames]
    except (ValueError, TypeError, AttributeError, KeyError, IndexError,
            NotImplementedError) as exc:  # a bad window, LUT or rescale in the header
        raise RowError(f"invalid DICOM intensity transform ({type(exc).__name__}: {exc})",
                       hint=path.name) from None
    return grey, pixel_size_mm(dataset)
