"""Bounded memory on hostile or huge inputs: sizes are read from the header and checked against
``--max-pixels`` before anything is decoded (issue 11)."""

from __future__ import annotations

import json
import struct
import subprocess
import sys
import zlib
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from conftest import breast_row, run_cli, write_breast

HUGE = 20000  # a 20000 x 20000 PNG: 400 MP, a few hundred KB on disk


def write_huge_png(path: Path, width: int = HUGE, height: int = HUGE, mode: str = "L") -> Path:
    """An all-black PNG written row block by row block: cheap to make however large it claims
    to be (nothing of its decoded size is ever held)."""
    channels, colour = {"L": (1, 0), "RGB": (3, 2), "RGBA": (4, 6)}[mode]

    def chunk(tag: bytes, data: bytes) -> bytes:
        return (struct.pack(">I", len(data)) + tag + data
                + struct.pack(">I", zlib.crc32(tag + data) & 0xFFFFFFFF))

    rows_per_block = 256
    block = bytes(1 + width * channels) * rows_per_block  # filter byte 0 + black pixels
    compressor = zlib.compressobj(9)
    with open(path, "wb") as fh:
        fh.write(b"\x89PNG\r\n\x1a\n")
        fh.write(chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, colour, 0, 0, 0)))
        for start in range(0, height, rows_per_block):
            rows = min(rows_per_block, height - start)
            data = compressor.compress(block[: rows * (1 + width * channels)])
            if data:
                fh.write(chunk(b"IDAT", data))
        fh.write(chunk(b"IDAT", compressor.flush()))
        fh.write(chunk(b"IEND", b""))
    return path


def write_deflated_dicom(path: Path, rows: int, columns: int, frames: int = 1,
                         pixel_bytes: int | None = None) -> Path:
    """A black 8-bit grey DICOM in Deflated Explicit VR Little Endian, written as a stream (the
    pixel data is never held): a few hundred KB that inflate to rows x columns x frames bytes
    (or ``pixel_bytes``, to make a file whose pixel data does not match its header)."""
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.filebase import DicomBytesIO
    from pydicom.filewriter import write_dataset, write_file_meta_info
    from pydicom.uid import DeflatedExplicitVRLittleEndian, generate_uid

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.6.1"
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = DeflatedExplicitVRLittleEndian
    meta.ImplementationClassUID = generate_uid()
    ds = Dataset()
    ds.SOPClassUID = meta.MediaStorageSOPClassUID
    ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    ds.Modality = "US"
    ds.Rows, ds.Columns = rows, columns
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 8, 8, 7, 0
    if frames > 1:
        ds.NumberOfFrames = frames
    head = DicomBytesIO()
    write_file_meta_info(head, meta)
    body = DicomBytesIO()
    body.is_little_endian, body.is_implicit_VR = True, False
    write_dataset(body, ds)
    size = rows * columns * frames if pixel_bytes is None else pixel_bytes
    padded = size + size % 2
    body.write(struct.pack("<HH2sHI", 0x7FE0, 0x0010, b"OB", 0, padded))  # Pixel Data, OB
    compressor = zlib.compressobj(9, zlib.DEFLATED, -zlib.MAX_WBITS)
    zeros = bytes(1 << 22)
    with open(path, "wb") as fh:
        fh.write(b"\0" * 128 + b"DICM" + head.getvalue())
        fh.write(compressor.compress(body.getvalue()))
        left = padded
        while left:
            step = min(left, len(zeros))
            fh.write(compressor.compress(zeros[:step]))
            left -= step
        fh.write(compressor.flush())
    return path


def huge_breast_source(root: Path, mode: str = "L") -> Path:
    """A BrEaST-layout source of three cases; case 2's image is a 20000 x 20000 PNG."""
    write_breast(root, [breast_row(1), breast_row(2, "malignant"), breast_row(3, "malignant")])
    write_huge_png(root / "BrEaST-Lesions_USG-images_and_masks" / "case002.png", mode=mode)
    return root


def write_claimed_png(path: Path, width: int, height: int) -> Path:
    """A PNG header claiming ``width`` x ``height`` with no pixel data behind it: only a reader
    that decodes would notice the missing data."""
    def chunk(tag: bytes, data: bytes) -> bytes:
        return (struct.pack(">I", len(data)) + tag + data
                + struct.pack(">I", zlib.crc32(tag + data) & 0xFFFFFFFF))

    path.write_bytes(b"\x89PNG\r\n\x1a\n"
                     + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0))
                     + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b""))
    return path


@pytest.fixture(scope="module")
def huge_files(tmp_path_factory) -> dict[str, Path]:
    """Made once: the 20000 x 20000 PNG, a 50-frame deflated DICOM (50 x 3200 x 3200 = 512 MB
    decoded, ~0.5 MB on disk) and a one-frame 8000 x 8000 deflated DICOM (64 MP)."""
    folder = tmp_path_factory.mktemp("huge")
    return {
        "png": write_huge_png(folder / "huge.png"),
        "cine": write_deflated_dicom(folder / "cine.dcm", 3200, 3200, frames=50),
        "frame": write_deflated_dicom(folder / "frame.dcm", 8000, 8000),
    }


# ---- the decoding layer ---------------------------------------------------------------------
def test_huge_png_is_refused_from_its_header_naming_size_and_cap(huge_files):
    from breastus_cli.data.imaging import DEFAULT_MAX_PIXELS, read_luminance, read_mask
    from breastus_cli.errors import RowError

    assert DEFAULT_MAX_PIXELS == 50_000_000
    with pytest.raises(RowError) as info:
        read_luminance(huge_files["png"])
    assert info.value.message == ("image too large: 20000x20000 = 400,000,000 pixels, over the "
                                  "cap of 50,000,000 (--max-pixels)")
    with pytest.raises(RowError, match="image too large"):
        read_mask([huge_files["png"]])


@pytest.mark.parametrize("side", [20000, 30000, 100000])
def test_size_is_checked_before_decoding_and_pil_bomb_error_never_shows(tmp_path, side):
    """Header-only files: a decoder would fail on the missing data ("truncated"), PIL's own bomb
    check fired first above 800 MP; now the size check answers, with one message."""
    from breastus_cli.data.imaging import read_luminance
    from breastus_cli.errors import RowError

    path = write_claimed_png(tmp_path / "claim.png", side, side)
    with pytest.raises(RowError) as info:
        read_luminance(path)
    assert info.value.message.startswith(f"image too large: {side}x{side} = {side * side:,} pixels")
    assert "bomb" not in info.value.message


def test_max_pixels_is_inclusive_and_normal_images_decode_as_before(tmp_path):
    from breastus_cli.data.imaging import read_luminance
    from breastus_cli.errors import RowError

    array = (np.arange(30 * 40) % 251).astype(np.uint8).reshape(30, 40)
    Image.fromarray(array).save(tmp_path / "small.png")
    assert np.array_equal(read_luminance(tmp_path / "small.png"), array)
    assert np.array_equal(read_luminance(tmp_path / "small.png", max_pixels=1200), array)
    with pytest.raises(RowError, match=r"40x30 = 1,200 pixels, over the cap of 1,199"):
        read_luminance(tmp_path / "small.png", max_pixels=1199)


def test_deflated_dicom_bombs_are_refused_from_the_header(huge_files):
    from breastus_cli.data.dicom import read_dicom
    from breastus_cli.errors import RowError

    with pytest.raises(RowError) as info:
        read_dicom(huge_files["cine"])
    assert info.value.message == (
        "DICOM too large: 50 frame(s) of 3200x3200 x 1 sample(s) x 8 bits = 512,000,000 bytes "
        "decoded, over the cap of 400,000,000 (8 x --max-pixels)")
    with pytest.raises(RowError) as info:
        read_dicom(huge_files["frame"])
    assert info.value.message == ("image too large: 8000x8000 = 64,000,000 pixels, over the cap "
                                  "of 50,000,000 (--max-pixels)")
    # a larger cap lets the per-frame check pass; the total budget still holds
    with pytest.raises(RowError, match="DICOM too large: 50 frame"):
        read_dicom(huge_files["cine"], max_pixels=20_000_000)


def test_small_deflated_dicoms_decode_and_the_all_frames_budget_holds(tmp_path):
    from breastus_cli.data.dicom import read_dicom
    from breastus_cli.errors import RowError

    frames, pixel = read_dicom(write_deflated_dicom(tmp_path / "small.dcm", 30, 40, frames=2))
    assert [f.shape for f in frames] == [(30, 40), (30, 40)] and pixel is None
    assert all(f.dtype == np.uint8 and not f.any() for f in frames)
    cine = write_deflated_dicom(tmp_path / "cine.dcm", 30, 40, frames=20)
    assert len(read_dicom(cine)[0]) == 20
    with pytest.raises(RowError, match=r"DICOM too large: 20 frame\(s\) of 40x30 x 1 sample\(s\) "
                                       r"x 8 bits = 24,000 bytes decoded, over the cap of 9,600"):
        read_dicom(cine, max_pixels=1200)  # each frame fits, all 20 do not


def test_a_deflated_dicom_whose_pixel_data_outgrows_its_header_is_refused(tmp_path):
    """The header says 30 x 40, the deflated stream holds 10 MB of pixels: inflating stops at
    the budget instead of trusting the header."""
    from breastus_cli.data.dicom import read_dicom
    from breastus_cli.errors import RowError

    path = write_deflated_dicom(tmp_path / "liar.dcm", 30, 40, pixel_bytes=10_000_000)
    with pytest.raises(RowError, match=r"deflated DICOM inflates to more than [\d,]+ bytes, more "
                                       r"than its header announces"):
        read_dicom(path)


def test_stream_lists_huge_files_and_decodes_the_rest(huge_files, tmp_path):
    from breastus_cli.data.scans import Unreadable, stream

    Image.fromarray(np.full((30, 40), 7, np.uint8)).save(tmp_path / "ok.png")
    files = [huge_files["cine"], huge_files["frame"], huge_files["png"], tmp_path / "ok.png"]
    results = list(stream(files, workers=2))
    assert [isinstance(r, Unreadable) for r in results] == [True, True, True, False]
    assert [r.reason.split(":")[0] for r in results[:3]] == [
        "DICOM too large", "image too large", "image too large"]
    assert results[3][0].image.shape == (30, 40)
    big_cap = list(stream([tmp_path / "ok.png"], max_pixels=1000))
    assert isinstance(big_cap[0], Unreadable) and "over the cap of 1,000" in big_cap[0].reason


# ---- prepare --------------------------------------------------------------------------------
def test_prepare_skips_the_huge_case_naming_the_cap_and_keeps_the_others(tmp_path):
    from breastus_cli.data.prepare import PrepareSettings, prepare
    from breastus_cli.errors import InputError

    src = huge_breast_source(tmp_path / "src")
    result = prepare(PrepareSettings(source=src, out=tmp_path / "data"))
    assert result.kept == 2
    listed = json.loads((tmp_path / "data/prepare.json").read_text())
    assert listed["skipped"] == [{
        "case_id": "case002", "value": "case002.png",
        "reason": "image too large: 20000x20000 = 400,000,000 pixels, over the cap of "
                  "50,000,000 (--max-pixels)"}]
    assert listed["settings"]["max_pixels"] == 50_000_000
    manifest = pd.read_csv(tmp_path / "data/manifest.csv")
    assert sorted(manifest["case_id"]) == ["case001", "case003"]
    with pytest.raises(InputError, match=r"--strict: 1 row\(s\).*case002: image too large"):
        prepare(PrepareSettings(source=src, out=tmp_path / "strict", strict=True))
    assert not (tmp_path / "strict").exists()


def test_prepare_max_pixels_option(tmp_path):
    src = write_breast(tmp_path / "src", [breast_row(1), breast_row(2)])  # 40 x 30 images
    proc = run_cli("prepare", str(src), "--out", str(tmp_path / "a"), "--max-pixels", "1199")
    assert proc.returncode == 2 and "no usable case" in proc.stderr, proc.stderr
    assert not (tmp_path / "a").exists()
    proc = run_cli("prepare", str(src), "--out", str(tmp_path / "b"), "--max-pixels", "1200")
    assert proc.returncode == 0, proc.stderr
    proc = run_cli("prepare", str(src), "--out", str(tmp_path / "c"), "--max-pixels", "0")
    assert proc.returncode == 2 and "--max-pixels" in proc.stderr
    assert "Traceback" not in proc.stderr and len(proc.stderr.strip().splitlines()) == 1
    assert "--max-pixels" in run_cli("prepare", "--help").stdout


def test_prepare_peak_memory_stays_bounded_on_a_20000_square_png(tmp_path):
    """``breastus prepare`` on a source whose one image is a 20000 x 20000 RGBA PNG (BrEaST's
    images are RGBA): it used to be decoded (6-9 GB); now the peak stays far under 2.5 GB."""
    src = huge_breast_source(tmp_path / "src", mode="RGBA")
    exe = Path(sys.executable).with_name("breastus")
    wrapper = ("import resource, subprocess, sys\n"
               "proc = subprocess.run(sys.argv[1:])\n"
               "peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss\n"
               "print(proc.returncode, peak)\n")  # Linux: kilobytes; only this one child
    done = subprocess.run([sys.executable, "-c", wrapper, str(exe), "prepare", str(src),
                           "--out", str(tmp_path / "data")],
                          capture_output=True, text=True, timeout=600)
    code, peak_kb = (int(v) for v in done.stdout.split()[-2:])
    assert code == 0, done.stderr
    assert peak_kb * 1024 < 2.5 * 1024**3, f"peak {peak_kb / 1024**2:.2f} GB"
    skipped = json.loads((tmp_path / "data/prepare.json").read_text())["skipped"]
    assert [s["case_id"] for s in skipped] == ["case002"]
    assert "over the cap of 50,000,000" in skipped[0]["reason"]


# ---- predict --------------------------------------------------------------------------------
def test_predict_lists_huge_files_in_errors_and_predicts_the_rest(huge_files, cls_run, tmp_path):
    scans = tmp_path / "scans"
    scans.mkdir()
    for name in ("png", "cine", "frame"):
        (scans / huge_files[name].name).symlink_to(huge_files[name])
    Image.fromarray((np.arange(64 * 80) % 200).astype(np.uint8).reshape(64, 80)).save(
        scans / "ok.png")
    write_deflated_dicom(scans / "small.dcm", 48, 64, frames=2)
    out = tmp_path / "out"
    proc = run_cli("predict", str(scans), "--cls-run", str(cls_run), "--out", str(out),
                   "--max-pixels", "50000000")
    assert proc.returncode == 0, proc.stderr
    assert "3 file(s) could not be read" in proc.stderr
    errors = pd.read_csv(out / "errors.csv")
    reasons = {Path(p).name: r for p, r in zip(errors["path"], errors["reason"])}
    assert reasons == {
        "huge.png": "image too large: 20000x20000 = 400,000,000 pixels, over the cap of "
                    "50,000,000 (--max-pixels)",
        "frame.dcm": "image too large: 8000x8000 = 64,000,000 pixels, over the cap of "
                     "50,000,000 (--max-pixels)",
        "cine.dcm": "DICOM too large: 50 frame(s) of 3200x3200 x 1 sample(s) x 8 bits = "
                    "512,000,000 bytes decoded, over the cap of 400,000,000 (8 x --max-pixels)",
    }
    pred = pd.read_csv(out / "predictions.csv", keep_default_na=False)
    assert sorted((Path(p).name, str(f)) for p, f in zip(pred["path"], pred["frame"])) == [
        ("ok.png", ""), ("small.dcm", "0"), ("small.dcm", "1")]
    assert "--max-pixels" in run_cli("predict", "--help").stdout


def test_stream_stops_starting_files_while_decoded_ones_wait(tmp_path, monkeypatch):
    """However slow the consumer, decoded images waiting stay near WAITING_BYTES (not ``ahead``
    files of them), and every file still comes back, in order."""
    import threading
    import time

    from breastus_cli.data import scans

    files = []
    for i in range(24):
        Image.fromarray(np.full((100, 100), i, np.uint8)).save(tmp_path / f"{i:02d}.png")
        files.append(tmp_path / f"{i:02d}.png")
    monkeypatch.setattr(scans, "WAITING_BYTES", 25_000)  # room for ~3 decoded 10 KB images
    decoded, lock, most = [0], threading.Lock(), [0]
    real = scans._decode_safely

    def counting(*args, **kwargs):
        result = real(*args, **kwargs)
        with lock:
            decoded[0] += 1
        return result

    monkeypatch.setattr(scans, "_decode_safely", counting)
    seen = []
    for n, result in enumerate(scans.stream(files, workers=2, ahead=32)):
        time.sleep(0.05)  # a slow consumer: the workers could run far ahead
        with lock:
            most[0] = max(most[0], decoded[0] - n - 1)
        seen.append(int(result[0].image[0, 0]))
    assert seen == list(range(24))
    assert most[0] <= 3 + 2 * 2  # under the byte budget, plus at most 2 queued per worker
