"""Ultrasound DICOM: frames as luminance arrays, and the physical pixel size.

* MONOCHROME2 as is, MONOCHROME1 inverted; RGB and YBR_* converted to RGB, then luminance.
* Multi-frame files give one array per frame.
* Pixel size in mm from the Sequence of Ultrasound Regions (PhysicalDeltaX/Y, in cm when
  PhysicalUnitsX/YDirection is 3) or else Pixel Spacing (mm); None when neither is there.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from breastus_cli.errors import RowError

_CM = 3  # DICOM PhysicalUnits code for centimetres


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
    frame = np.asarray(frame)
    if frame.ndim == 3 and frame.shape[-1] == 3:
        rgb = frame.astype(np.float64)
        if rgb.max() > 255:
            rgb = rgb / rgb.max() * 255.0
        lum = rgb[..., 0] * 0.299 + rgb[..., 1] * 0.587 + rgb[..., 2] * 0.114
        return np.clip(np.rint(lum), 0, 255).astype(np.uint8)
    values = frame.astype(np.float64)
    low, high = float(values.min()), float(values.max())
    if bits > 8 or high > 255 or low < 0:
        values = (values - low) / (high - low) * 255.0 if high > low else values * 0.0
    if photometric == "MONOCHROME1":  # 0 is white in MONOCHROME1
        values = 255.0 - values
    return np.clip(np.rint(values), 0, 255).astype(np.uint8)


def read_dicom(path: str | Path) -> tuple[list[np.ndarray], float | None]:
    """All frames of a DICOM file as uint8 luminance arrays, and the pixel size in mm."""
    import pydicom
    from pydicom.errors import InvalidDicomError

    path = Path(path)
    try:
        dataset = pydicom.dcmread(path)
    except (InvalidDicomError, OSError, EOFError, ValueError) as exc:
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
