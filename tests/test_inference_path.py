"""One inference path (engine/inference.py): the upsample + threshold of a probability map, the
lesion crops from a mask, and evaluate and predict giving the same masks for the same cases."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image

from conftest import copy_run, run_cli


def _known_map() -> np.ndarray:
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:16, 0:16] / 15
    return (np.exp(-((xx - 0.4) ** 2 + (yy - 0.6) ** 2) / 0.05) * 0.9
            + rng.uniform(0, 0.1, (16, 16))).astype(np.float32)


def _as_before(prob: np.ndarray, height: int, width: int, threshold: float) -> np.ndarray:
    """What evaluate.py and predict.py each wrote inline before the one inference path."""
    big = Image.fromarray(np.ascontiguousarray(prob, dtype=np.float32))
    return np.asarray(big.resize((width, height), Image.BILINEAR)) >= threshold


#: the mask of _known_map() at 23 x 37 and 0.5, frozen from the code before the change
KNOWN_MASK_HEX = ("0000000000000000000000000000000000000000000000000000000000000000000000000000"
                  "00000000000800000007f8000000ffe0000007ff8000007ffe000003ffe000000fff0000003f"
                  "f00000003c0000000000000000000000000000000000000000000000000000")


def test_upsample_and_threshold_give_the_mask_as_before():
    from breastus_cli.engine.apply.images import to_original_size

    prob = _known_map()
    before = _as_before(prob, 23, 37, 0.5)
    assert np.packbits(before).tobytes().hex() == KNOWN_MASK_HEX and before.sum() == 85
    big, mask = to_original_size(prob, (23, 37), 0.5)
    assert mask.shape == (23, 37) and mask.dtype == bool
    np.testing.assert_array_equal(mask, before)
    np.testing.assert_array_equal(big >= 0.5, mask)
    # a (S, S, 1) model output gives the same, and other thresholds follow the old rule
    np.testing.assert_array_equal(to_original_size(prob[..., None], (23, 37), 0.5)[1], before)
    for threshold in (0.2, 0.7):
        np.testing.assert_array_equal(to_original_size(prob, (40, 11), threshold)[1],
                                      _as_before(prob, 40, 11, threshold))


def test_lesion_crop_uses_the_roi_box():
    from breastus_cli.data.roi import roi_box
    from breastus_cli.engine.apply.images import lesion_crop

    image = np.arange(100 * 120, dtype=np.uint8).reshape(100, 120)
    mask = np.zeros((100, 120), bool)
    mask[40:50, 30:70] = True
    for margin in (0.0, 0.2, 1.0, 3.0):
        box, found = roi_box(mask, margin)
        crop, got_box, got_found = lesion_crop(image, mask, margin)
        assert (got_box, got_found) == (box, found)
        x0, y0, x1, y1 = box
        np.testing.assert_array_equal(crop, image[y0:y1, x0:x1])
    crop, box, found = lesion_crop(image, np.zeros((100, 120), bool), 0.2)
    assert not found and box == (0, 0, 120, 100) and crop.shape == image.shape


def test_loaded_run_knows_task_size_threshold(seg_run):
    from breastus_cli.engine.apply.inference import open_run
    from breastus_cli.engine.runs.rundir import read_config, read_threshold

    loaded = open_run(seg_run, "seg")
    config = read_config(seg_run)
    assert loaded.task == "seg" and loaded.size == int(config["settings"]["img_size"])
    assert loaded.threshold == read_threshold(seg_run, config).value
    assert loaded.roi_margin is None and loaded.keras_model is not None
    out = loaded.run(np.zeros((3, loaded.size, loaded.size, 1), np.float32))
    assert out.shape == (3, loaded.size, loaded.size, 1)
    assert loaded.run(np.zeros((0, loaded.size, loaded.size, 1), np.float32)).shape[0] == 0


def test_evaluate_and_predict_give_the_same_masks(seg_evaluated, learn_data, tmp_path):
    run = seg_evaluated  # the shared U-Net evaluated once (conftest); predict only reads it
    per_case = pd.read_csv(run / "eval-test/per_case.csv")
    cases = per_case.head(6)
    files = [str(learn_data / p) for p in cases["image"]]
    out = tmp_path / "out"
    proc = run_cli("predict", *files, "--seg-run", str(run), "--out", str(out), "--save-masks")
    assert proc.returncode == 0, proc.stderr
    pred = pd.read_csv(out / "predictions.csv")
    pred["image"] = [str(Path(p).relative_to(learn_data)) for p in pred["path"]]
    merged = cases.merge(pred, on="image", suffixes=("_eval", "_pred"))
    assert len(merged) == len(cases)
    for _, row in merged.iterrows():
        from_eval = np.asarray(Image.open(run / "eval-test" / row["pred_mask"])) > 0
        from_predict = np.asarray(Image.open(out / row["mask_pred"])) > 0
        np.testing.assert_array_equal(from_eval, from_predict)
        assert int(from_predict.sum()) == int(row["lesion_area_px"])


def test_training_cache_and_serving_resize_identically(synth_data):
    """One resize for training and serving: the tf.data cache (evaluate's path too) and
    predict's in-memory resize give identical arrays for the same prepared image."""
    import pandas as pd

    from breastus_cli import backend
    from breastus_cli.data.imaging import read_luminance
    from breastus_cli.data.pipeline import load_arrays
    from breastus_cli.engine.apply.images import resize_input

    manifest = pd.read_csv(synth_data / "manifest.csv")
    paths = [str(synth_data / p) for p in manifest["image"][:6]]
    for size in (64, 100):
        cached = load_arrays(paths, size)
        served = np.stack([resize_input(read_luminance(p), size) for p in paths])
        assert cached.shape == served.shape == (len(paths), size, size, 1)
        assert np.array_equal(cached.astype(np.float32), served)
        # and within a grey level of the former tf.image.resize(antialias=True)
        tf = backend.tf()
        old = np.stack([np.clip(np.rint(tf.image.resize(
            read_luminance(p)[..., None].astype(np.float32), [size, size], method="bilinear",
            antialias=True).numpy()), 0, 255) for p in paths])
        difference = np.abs(old - served)
        assert difference.mean() < 0.5 and np.percentile(difference, 99) <= 2


def test_a_loaded_model_is_reused_until_its_file_changes(cls_run, tmp_path):
    from breastus_cli.engine.apply.loaded_run import load_model

    run = copy_run(cls_run, tmp_path / "run")
    first = load_model(run)
    assert load_model(run / "model.keras") is first  # same file: not rebuilt
    # a copy of the run holds the same bytes: the same model, not checked and built again
    assert load_model(copy_run(cls_run, tmp_path / "copy")) is first
    # other bytes at the same path: checked and loaded again, with the new weights
    changed = load_model(tmp_path / "copy")
    weights = changed.get_weights()
    changed.set_weights([w + 1 for w in weights])
    changed.save(run / "model.keras")
    changed.set_weights(weights)
    again = load_model(run)
    assert again is not first
    np.testing.assert_allclose(again.get_weights()[0], weights[0] + 1)
    assert load_model(tmp_path / "copy") is first
