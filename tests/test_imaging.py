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


# ---- the OpenCV path for 8-bit PNGs gives PIL's pixels exactly --------------------------------
def _pil(path):
    from breastus_cli.data.imaging import open_image, to_luminance

    return to_luminance(open_image(path))


def test_opencv_png_path_equals_pil_for_every_value_and_alpha(tmp_path):
    """Every (value, alpha) pair of an RGBA PNG, and random RGB and grey PNGs: the fast path
    decodes them (it does not hand them to PIL) to the very pixels of the PIL path."""
    from breastus_cli.data.imaging import _fast_png

    v = np.arange(256, dtype=np.uint16)[:, None].repeat(256, 1)
    a = np.arange(256, dtype=np.uint16)[None, :].repeat(256, 0)
    rgba = np.stack([v, 255 - v, (v * 7) % 256, a], -1).astype(np.uint8)
    rng = np.random.default_rng(3)
    images = {"rgba.png": Image.fromarray(rgba, "RGBA"),
              "rgb.png": Image.fromarray(rng.integers(0, 256, (97, 131, 3), dtype=np.uint8)),
              "grey.png": Image.fromarray(rng.integers(0, 256, (50, 70), dtype=np.uint8))}
    for name, image in images.items():
        image.save(tmp_path / name)
        fast = _fast_png(tmp_path / name, 10**8)
        assert fast is not None, name
        np.testing.assert_array_equal(fast, _pil(tmp_path / name), err_msg=name)
        np.testing.assert_array_equal(read_luminance(tmp_path / name), fast)


def test_pngs_the_opencv_path_is_unsure_of_take_the_pil_path(tmp_path):
    """Palette, grey+alpha, 16-bit, a transparency colour, and EXIF orientation (before or after
    the image data): decoded by PIL, by the data rules."""
    from breastus_cli.data.imaging import _fast_png

    rng = np.random.default_rng(4)
    rgb = Image.fromarray(rng.integers(0, 256, (20, 30, 3), dtype=np.uint8))
    rgb.convert("P").save(tmp_path / "palette.png")
    Image.fromarray(rng.integers(0, 256, (20, 30, 2), dtype=np.uint8), "LA").save(
        tmp_path / "la.png")
    Image.fromarray(rng.integers(0, 60000, (20, 30)).astype(np.uint16)).save(tmp_path / "i16.png")
    rgb.save(tmp_path / "trns.png", transparency=(10, 20, 30))
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees when shown
    rgb.save(tmp_path / "exif.png", exif=exif.tobytes())
    for name in ("palette.png", "la.png", "i16.png", "trns.png", "exif.png"):
        assert _fast_png(tmp_path / name, 10**8) is None, name
        np.testing.assert_array_equal(read_luminance(tmp_path / name), _pil(tmp_path / name))
    assert read_luminance(tmp_path / "exif.png").shape == (30, 20)  # turned upright


def test_a_corrupt_png_is_named_by_the_pil_fallback(tmp_path):
    good = tmp_path / "good.png"
    Image.fromarray(np.zeros((40, 40), np.uint8)).save(good)
    bad = tmp_path / "bad.png"
    data = bytearray(good.read_bytes())
    data[60:80] = b"\x00" * 20  # the image data broken, the header intact
    bad.write_bytes(bytes(data))
    with pytest.raises(RowError) as info:
        read_luminance(bad)
    assert "corrupt" in info.value.message


def test_a_corrupt_png_gives_no_decoder_log_line_on_stderr(tmp_path):
    """OpenCV logs "[ WARN:0@...] global grfmt_png.cpp ..." to the process's stderr on a
    truncated PNG: breastus names the problem itself, in one line, and nothing else."""
    import subprocess
    import sys

    good = tmp_path / "good.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (200, 200), np.uint8)).save(good)
    bad = tmp_path / "bad.png"
    bad.write_bytes(good.read_bytes()[:300])
    code = ("import sys\nfrom breastus_cli.data.imaging import read_luminance\n"
            "try:\n    read_luminance(sys.argv[1])\nexcept Exception as exc:\n"
            "    print(type(exc).__name__)\n")
    proc = subprocess.run([sys.executable, "-c", code, str(bad)], capture_output=True,
                          text=True, timeout=120)
    assert proc.stdout.strip() == "RowError"
    assert proc.stderr == "", proc.stderr


def test_training_cache_and_serving_read_the_same_pixels(tmp_path):
    """The training pipeline's arrays equal the inference path's (decode, then the one resize)."""
    from breastus_cli.data.imaging import resize_grey
    from breastus_cli.data.pipeline import load_arrays

    rng = np.random.default_rng(5)
    paths = []
    for i, mode in enumerate(("L", "RGB", "RGBA")):
        shape = (90 + 7 * i, 120) if mode == "L" else (90 + 7 * i, 120, len(mode))
        path = tmp_path / f"{i}.png"
        Image.fromarray(rng.integers(0, 256, shape, dtype=np.uint8), mode).save(path)
        paths.append(path)
    cached = load_arrays(paths, 64)
    for path, array in zip(paths, cached):
        np.testing.assert_array_equal(array[..., 0], resize_grey(read_luminance(path), 64))
