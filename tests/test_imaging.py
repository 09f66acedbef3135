"""Decoding rules: RGBA on black, luminance, 16-bit scaling, EXIF, mask union and binarization."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from breastus_cli.data.imaging import read_luminance, read_mask, save_png
from breastus_cli.errors import RowError


def test_rgba_hidden_pixels_are_composited_on_black(tmp_path):
    array = np.zeros((10, 12, 4), dtype=np.uint8)
    array[..., :3] = 200          # bright RGB everywhere...
    array[:, :6, 3] = 0           # ...but the left half is fully transparent
    array[:, 6:, 3] = 255
    Image.fromarray(array, "RGBA").save(tmp_path / "a.png")
    lum = read_luminance(tmp_path / "a.png")
    assert lum.shape == (10, 12) and lum.dtype == np.uint8
    assert (lum[:, :6] == 0).all()                 # hidden pixels stay hidden
    assert (lum[:, 6:] == 200).all()
    # the naive conversion would have shown them:
    assert (np.asarray(Image.open(tmp_path / "a.png").convert("L"))[:, :6] == 200).all()


def test_half_transparent_pixels_are_blended_with_black(tmp_path):
    array = np.full((4, 4, 4), 200, dtype=np.uint8)
    array[..., 3] = 128
    Image.fromarray(array, "RGBA").save(tmp_path / "a.png")
    assert abs(int(read_luminance(tmp_path / "a.png")[0, 0]) - 100) <= 1


def test_tinted_rgb_becomes_luminance(tmp_path):
    array = np.zeros((3, 3, 3), dtype=np.uint8)
    array[..., 0], array[..., 1], array[..., 2] = 100, 150, 50
    Image.fromarray(array, "RGB").save(tmp_path / "t.png")
    expected = round(100 * 0.299 + 150 * 0.587 + 50 * 0.114)
    assert abs(int(read_luminance(tmp_path / "t.png")[1, 1]) - expected) <= 1


def test_16_bit_images_are_scaled_by_their_maximum(tmp_path):
    array = np.array([[0, 1000], [2000, 4000]], dtype=np.uint16)
    Image.fromarray(array).save(tmp_path / "w.png")
    assert Image.open(tmp_path / "w.png").mode.startswith("I")
    lum = read_luminance(tmp_path / "w.png")
    assert lum.tolist() == [[0, 64], [128, 255]]


def test_exif_orientation_is_honoured(tmp_path):
    array = np.zeros((20, 40), dtype=np.uint8)  # 40 wide, 20 high
    image = Image.fromarray(array, "L")
    exif = image.getexif()
    exif[0x0112] = 6  # rotate 90 degrees on display
    image.save(tmp_path / "r.jpg", exif=exif)
    assert read_luminance(tmp_path / "r.jpg").shape == (40, 20)


def test_palette_with_transparency(tmp_path):
    image = Image.new("P", (4, 4), 1)
    image.putpalette([0, 0, 0, 250, 250, 250] + [0] * 762)
    image.info["transparency"] = 1
    image.save(tmp_path / "p.png", transparency=1)
    assert (read_luminance(tmp_path / "p.png") == 0).all()


def test_mask_union_and_threshold(tmp_path):
    a = np.zeros((6, 6, 4), dtype=np.uint8)
    a[0:2, 0:2] = 255
    b = np.zeros((6, 6, 4), dtype=np.uint8)
    b[4:6, 4:6, :3] = 255
    b[4:6, 4:6, 3] = 75  # BrEaST case010: lesion RGB 255 with alpha 75 is still lesion
    b[3, 3, :3] = 120    # grey below the threshold is background
    Image.fromarray(a, "RGBA").save(tmp_path / "a.png")
    Image.fromarray(b, "RGBA").save(tmp_path / "b.png")
    mask = read_mask([tmp_path / "a.png", tmp_path / "b.png"], shape=(6, 6))
    assert mask.dtype == bool and int(mask.sum()) == 8
    assert mask[0, 0] and mask[5, 5] and not mask[3, 3]


def test_mode_1_mask(tmp_path):
    Image.fromarray(np.eye(5, dtype=bool)).save(tmp_path / "m.png")
    assert int(read_mask([tmp_path / "m.png"]).sum()) == 5


def test_mask_size_mismatch_is_a_row_error(tmp_path):
    Image.new("L", (5, 4)).save(tmp_path / "m.png")
    with pytest.raises(RowError, match="mask size differs from image"):
        read_mask([tmp_path / "m.png"], shape=(4, 6))


@pytest.mark.parametrize(
    ("content", "reason"),
    [(b"", "empty file"), (b"hello, not a picture", "not an image"),
     (b"\x89PNG\r\n\x1a\n" + b"\x00" * 40, "image")],
)
def test_unreadable_files_are_row_errors(tmp_path, content, reason):
    path = tmp_path / "x.png"
    path.write_bytes(content)
    with pytest.raises(RowError, match=reason):
        read_luminance(path)


def test_truncated_png_is_corrupt(tmp_path):
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (64, 64), dtype=np.uint8)).save(
        tmp_path / "ok.png")
    data = (tmp_path / "ok.png").read_bytes()
    (tmp_path / "cut.png").write_bytes(data[: len(data) // 2])
    with pytest.raises(RowError, match="corrupt image"):
        read_luminance(tmp_path / "cut.png")


def test_missing_file(tmp_path):
    with pytest.raises(RowError, match="file not found"):
        read_luminance(tmp_path / "nope.png")


def test_save_png_roundtrip(tmp_path):
    mask = np.zeros((3, 4), dtype=bool)
    mask[1, 2] = True
    save_png(mask, tmp_path / "m.png")
    back = np.asarray(Image.open(tmp_path / "m.png"))
    assert back.dtype == np.uint8 and back[1, 2] == 255 and back.sum() == 255
