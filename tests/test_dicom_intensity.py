"""DICOM grey levels: Modality LUT / rescale, VOI windowing or LUT, a fixed per-file scale."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
from conftest import write_dicom

from breastus_cli.data import dicom
from breastus_cli.data.dicom import read_dicom
from breastus_cli.errors import RowError


def _dicom(path: Path, frames: np.ndarray, photometric: str = "MONOCHROME2", bits: int = 12,
           signed: bool = False, **elements: Any) -> Path:
    """A monochrome DICOM stored in ``bits`` bits; ``elements``: WindowCenter, ..."""
    return write_dicom(path, frames, photometric, bits=bits, signed=signed, **elements)


def _grey(path: Path, **kwargs: Any) -> list[np.ndarray]:
    frames, _ = read_dicom(path, **kwargs)
    assert all(f.dtype == np.uint8 for f in frames)
    return frames


# window centre 2048, width 1024 (LINEAR): at or below 1536 -> 0, above 2559 -> 255
WINDOW = {"WindowCenter": 2048, "WindowWidth": 1024}


def test_12bit_window_edges_map_to_black_and_white_and_the_centre_to_mid_grey(tmp_path):
    values = np.array([[0, 1000, 1536, 2048, 2559, 4095]])
    grey = _grey(_dicom(tmp_path / "w.dcm", values[None], **WINDOW))[0]
    assert grey.tolist() == [[0, 0, 0, 128, 255, 255]]
    # no per-frame stretch: a frame whose content spans only part of the window stays there
    inner = _grey(_dicom(tmp_path / "inner.dcm", np.array([[[1800, 2048, 2300]]]), **WINDOW))[0]
    assert inner.tolist() == [[grey_at(1800), 128, grey_at(2300)]]
    assert 0 < inner.min() and inner.max() < 255


def grey_at(value: float, center: float = 2048, width: float = 1024) -> int:
    """DICOM PS3.3 C.11.2.1.2.1 LINEAR windowing onto 0..4095, then to 0..255."""
    c, w = center - 0.5, width - 1
    y = 0.0 if value <= c - w / 2 else 4095.0 if value > c + w / 2 else \
        ((value - c) / w + 0.5) * 4095
    return int(np.rint(y / 4095 * 255))


def test_the_first_of_several_windows_is_used(tmp_path):
    values = np.array([[[1536, 2048, 2559]]])
    grey = _grey(_dicom(tmp_path / "two.dcm", values, WindowCenter=[2048, 100],
                        WindowWidth=[1024, 50]))[0]
    assert grey.tolist() == [[0, 128, 255]]


def test_frames_with_different_ranges_give_the_same_grey_to_the_same_stored_value(tmp_path):
    """Per-frame min-max gave 1000 a different grey in each frame (and in each file)."""
    frames = np.zeros((2, 2, 3), dtype=np.uint16)
    frames[0] = [[100, 1000, 3000], [100, 1000, 3000]]
    frames[1] = [[1000, 1200, 2000], [1000, 1200, 2000]]
    first, second = _grey(_dicom(tmp_path / "cine.dcm", frames))
    assert first[0, 1] == second[0, 0] == round(1000 / 4095 * 255)
    assert second[0, 2] == round(2000 / 4095 * 255)
    single = _grey(_dicom(tmp_path / "one.dcm", frames[1:]))[0]
    assert np.array_equal(single, second)   # the same scale in every file of the same depth
    # with a window, too
    first, second = _grey(_dicom(tmp_path / "cine_w.dcm", frames, **WINDOW))
    assert first[0, 1] == second[0, 0] == 0 and second[0, 2] == grey_at(2000)


def test_no_voi_maps_the_stored_range_signed_or_not(tmp_path):
    values = np.array([[[0, 2048, 4095]]])
    assert _grey(_dicom(tmp_path / "u.dcm", values))[0].tolist() == [[0, 128, 255]]
    signed = np.array([[[-2048, 0, 2047]]])
    assert _grey(_dicom(tmp_path / "s.dcm", signed, signed=True))[0].tolist() == [[0, 128, 255]]
    # rescale alone is linear: the stored range is still the grey range
    rescaled = _dicom(tmp_path / "r.dcm", values, RescaleSlope=2, RescaleIntercept=-1024)
    assert _grey(rescaled)[0].tolist() == [[0, 128, 255]]


def test_rescale_slope_and_intercept_are_applied_before_the_window(tmp_path):
    """Stored s is 2*s - 1024 after rescale; the window (centre 1000, width 2001) is in those
    units: s=512 is 0 (low edge) -> 0, s=1012 is 1000 (centre) -> 128, s=1512 is 2000 -> 255."""
    values = np.array([[[0, 512, 1012, 1512, 4095]]])
    grey = _grey(_dicom(tmp_path / "r.dcm", values, RescaleSlope=2, RescaleIntercept=-1024,
                        WindowCenter=1000, WindowWidth=2001))[0]
    assert grey.tolist() == [[0, 0, 128, 255, 255]]


def test_monochrome1_is_inverted_after_the_window(tmp_path):
    values = np.array([[[1536, 2048, 2559]]])
    grey = _grey(_dicom(tmp_path / "m1.dcm", values, "MONOCHROME1", **WINDOW))[0]
    assert grey.tolist() == [[255, 127, 0]]
    plain = _grey(_dicom(tmp_path / "m1p.dcm", np.array([[[0, 4095]]]), "MONOCHROME1"))[0]
    assert plain.tolist() == [[255, 0]]


def _lut(descriptor: list[int], data: list[int]) -> Any:
    from pydicom.dataset import Dataset

    item = Dataset()
    item.add_new(0x00283002, "US", descriptor)  # LUT Descriptor
    item.add_new(0x00283006, "US", data)        # LUT Data
    return item


def test_a_voi_lut_is_preferred_to_the_window_and_scaled_from_its_declared_depth(tmp_path):
    # 12-bit entries: stored 1000 + k -> 4095 - k * 16, below 1000 -> the first entry
    lut = _lut([256, 1000, 12], [4095 - k * 16 for k in range(256)])
    values = np.array([[[0, 1000, 1128, 1255, 4000]]])
    grey = _grey(_dicom(tmp_path / "lut.dcm", values, VOILUTSequence=[lut], **WINDOW))[0]
    expected = [4095, 4095, 4095 - 128 * 16, 4095 - 255 * 16, 4095 - 255 * 16]
    assert grey.tolist() == [[round(v / 4095 * 255) for v in expected]]


def test_a_modality_lut_defines_the_range_without_voi(tmp_path):
    lut = _lut([4, 0, 8], [0, 255, 10, 100])  # 8-bit entries: stored 1 -> 255
    grey = _grey(_dicom(tmp_path / "mlut.dcm", np.array([[[0, 1, 2, 3, 9]]]),
                        ModalityLUTSequence=[lut]))[0]
    assert grey.tolist() == [[0, 255, 10, 100, 100]]


def test_8bit_files_without_voi_are_unchanged(tmp_path):
    rng = np.random.default_rng(0)
    frames = rng.integers(0, 256, (3, 20, 30), dtype=np.uint8)
    got = _grey(_dicom(tmp_path / "cine8.dcm", frames, bits=8))
    assert all(np.array_equal(g, f) for g, f in zip(got, frames))
    one = _grey(_dicom(tmp_path / "one8.dcm", frames[:1], bits=8))[0]
    assert np.array_equal(one, frames[0])
    inverted = _grey(_dicom(tmp_path / "inv8.dcm", frames[:1], "MONOCHROME1", bits=8))[0]
    assert np.array_equal(inverted, 255 - frames[0])


def test_blockwise_conversion_gives_the_same_numbers(tmp_path, monkeypatch):
    rng = np.random.default_rng(1)
    frames = rng.integers(0, 4096, (2, 17, 13), dtype=np.uint16)
    path = _dicom(tmp_path / "b.dcm", frames, RescaleSlope=2, RescaleIntercept=-1024,
                  WindowCenter=3000, WindowWidth=5000)
    whole = _grey(path)
    monkeypatch.setattr(dicom, "_CHUNK_PIXELS", 13 * 3)  # three rows a block
    assert all(np.array_equal(a, b) for a, b in zip(whole, _grey(path)))


def test_an_invalid_window_is_one_row_error(tmp_path):
    path = _dicom(tmp_path / "bad.dcm", np.array([[[1, 2]]]), WindowCenter=10, WindowWidth=0)
    with pytest.raises(RowError, match=r"^invalid DICOM intensity transform \(ValueError: "):
        read_dicom(path)
