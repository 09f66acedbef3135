"""train-seg and segmentation evaluate, end to end on synthetic data through `breastus`."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from conftest import LIGHT_SEG
from conftest import copy_run, run_cli



@pytest.fixture(scope="session")
def seg_eval(seg_evaluated) -> Path:
    """The shared U-Net's evaluation (conftest's ``seg_evaluated``; read-only)."""
    return seg_evaluated / "eval-test"


def test_train_seg_uses_the_shared_run_directory(seg_run):
    for name in ("config.json", "history.csv", "model.keras", "best.json", "train.log"):
        assert (seg_run / name).is_file(), name
    config = json.loads((seg_run / "config.json").read_text())
    assert config["task"] == "seg" and config["status"] == "finished"
    assert config["settings"]["backbone"] == "efficientnetb2"
    assert config["settings"]["loss"] == "bce_jaccard"
    assert config["monitor"] == {"name": "val_iou", "mode": "max"}
    history = pd.read_csv(seg_run / "history.csv")
    assert history["epoch"].tolist() == list(range(1, 7))
    assert {"loss", "iou", "dice", "val_iou", "val_dice"} <= set(history.columns)
    best = json.loads((seg_run / "best.json").read_text())
    assert best["value"] == pytest.approx(history["val_iou"].max())


def test_evaluate_writes_every_segmentation_artifact(seg_eval, learn_data):
    for name in ("per_case.csv", "metrics.json", "report.md", "report.html"):
        assert (seg_eval / name).is_file(), name
    overlays = sorted(p.name.split("-")[0] for p in (seg_eval / "overlays").iterdir())
    assert overlays == ["best", "median", "worst"]
    per_case = pd.read_csv(seg_eval / "per_case.csv")
    assert {"case_id", "iou", "dice", "precision", "recall", "hd95_mm", "true_area_mm2",
            "pred_area_mm2"} <= set(per_case.columns)
    splits = pd.read_csv(learn_data / "splits.csv")
    manifest = pd.read_csv(learn_data / "manifest.csv")
    test_ids = set(splits.loc[splits["split"] == "test", "case_id"])
    assert set(per_case["case_id"]) == test_ids & set(manifest.loc[manifest["mask"].notna(),
                                                                   "case_id"])
    # predicted masks are scored at each image's original size
    for row in per_case.head(5).itertuples():
        size = Image.open(seg_eval / row.pred_mask).size
        assert size == (row.width, row.height)
        assert size == Image.open(learn_data / row.mask).size
    # areas in mm^2 follow the pixel size
    row = per_case.iloc[0]
    assert row["true_area_mm2"] == pytest.approx(row["true_area_px"] * row["pixel_size_mm"] ** 2)
    metrics = json.loads((seg_eval / "metrics.json").read_text())
    assert metrics["iou"] == pytest.approx(per_case["iou"].mean())
    assert metrics["dice"] == pytest.approx(per_case["dice"].mean())
    lo, hi = metrics["ci"]["iou"]
    assert lo <= metrics["iou"] <= hi
    assert {"dataset_iou", "empty_predictions"} <= set(metrics)


def _masks(folder: Path) -> dict[str, np.ndarray]:
    return {p.stem: np.asarray(Image.open(p)) > 0 for p in sorted(folder.glob("*.png"))}


def test_evaluate_chooses_the_mask_post_processing_on_validation_cases(seg_eval, tmp_path):
    """The calibration step at the end of train-seg chose it on the run's validation cases
    (RUN/postprocess.json); evaluate applies it to the test masks and says so; --postprocess
    forces the other one into its own folder, and the masks differ exactly by the
    post-processing."""
    from breastus_cli.engine.apply.postprocess import largest_component

    run = copy_run(seg_eval.parent, tmp_path / "unet")  # the forced evaluation writes into it
    seg_eval = run / "eval-test"
    chosen = json.loads((run / "postprocess.json").read_text())
    config = json.loads((run / "config.json").read_text())
    assert chosen["n_validation"] == config["data"]["n_val"]
    dice = chosen["validation_dice"]
    assert set(dice) == {"none", "largest"} and all(0 <= v <= 1 for v in dice.values())
    assert chosen["method"] == ("largest" if dice["largest"] > dice["none"] else "none")
    metrics = json.loads((seg_eval / "metrics.json").read_text())
    assert metrics["postprocess"] == chosen["method"]
    assert metrics["postprocess_source"].startswith(
        f"chosen on {chosen['n_validation']} validation cases")
    assert "Post-processing" in (seg_eval / "report.md").read_text()

    other = "none" if chosen["method"] == "largest" else "largest"
    before = (seg_eval / "metrics.json").read_bytes()
    proc = run_cli("evaluate", str(run), "--postprocess", other, "--bootstrap", "0")
    assert proc.returncode == 0, proc.stderr
    forced = run / f"eval-test-postprocess-{other}"
    forced_metrics = json.loads((forced / "metrics.json").read_text())
    assert forced_metrics["postprocess"] == other
    assert forced_metrics["postprocess_source"] == "given with --postprocess"
    assert (seg_eval / "metrics.json").read_bytes() == before  # the run's evaluation kept
    plain, kept = ((_masks(forced / "masks"), _masks(seg_eval / "masks")) if other == "none"
                   else (_masks(seg_eval / "masks"), _masks(forced / "masks")))
    assert plain.keys() == kept.keys() and plain
    for case, mask in plain.items():
        assert np.array_equal(kept[case], largest_component(mask)), case


def test_segmenter_learned_far_beyond_trivial_answers(seg_eval, learn_data):
    """Mean IoU on unseen cases against the two trivial answers: an empty mask (IoU 0) and the
    whole image (IoU = lesion area / image area)."""
    per_case = pd.read_csv(seg_eval / "per_case.csv")
    whole_image = (per_case["true_area_px"] / (per_case["width"] * per_case["height"])).mean()
    mean_iou = per_case["iou"].mean()
    assert mean_iou >= 0.45, mean_iou
    assert mean_iou >= whole_image + 0.3, (mean_iou, whole_image)
    assert (per_case["pred_area_px"] == 0).mean() < 0.2  # rarely an empty answer


def test_other_masks_are_united_on_request(learn_data, tmp_path):
    manifest = pd.read_csv(learn_data / "manifest.csv", keep_default_na=False)
    with_other = manifest.loc[manifest["other_mask"] != "", "case_id"].tolist()
    assert with_other, "the synthetic set must have cases with 'other' masks"
    run = tmp_path / "other"
    proc = run_cli("train-seg", str(learn_data), *LIGHT_SEG, "--epochs", "1",
                   "--include-other-masks", "--run-dir", str(run))
    assert proc.returncode == 0, proc.stderr
    assert json.loads((run / "config.json").read_text())["include_other_masks"] is True
    splits = pd.read_csv(learn_data / "splits.csv").set_index("case_id")["split"]
    expected = {c for c in with_other if splits[c] in ("train", "val")}
    written = {p.stem for p in (run / "masks-with-other").iterdir()}
    assert written == expected
    case = sorted(written)[0]
    united = np.asarray(Image.open(run / "masks-with-other" / f"{case}.png")) > 0
    lesion = np.asarray(Image.open(learn_data / "seg/masks" / f"{case}.png")) > 0
    other = np.asarray(Image.open(learn_data / "seg/other" / f"{case}.png")) > 0
    assert (united == (lesion | other)).all() and united.sum() > lesion.sum()


@pytest.mark.parametrize(
    ("args", "message"),
    [(["--img-size", "100"], "--img-size must be a multiple of 32"),
     (["--backbone", "unknownnet"], "--backbone must be one of"),
     (["--loss", "mse"], "--loss must be"),
     (["--monitor", "val_auc"], "--monitor must be")],
)
def test_bad_options_exit_2(learn_data, tmp_path, args, message):
    proc = run_cli("train-seg", str(learn_data), "--weights", "none", *args,
                   "--run-dir", str(tmp_path / "r"))
    assert proc.returncode == 2 and message in proc.stderr
    assert not (tmp_path / "r").exists()


def test_encoder_imagenet_offline_names_the_file(learn_data, tmp_path):
    proc = run_cli("train-seg", str(learn_data), "--img-size", "64", "--offline",
                   "--run-dir", str(tmp_path / "r"), env={"KERAS_HOME": str(tmp_path / "k")})
    assert proc.returncode == 2
    assert "efficientnet-b2_weights_tf_dim_ordering_tf_kernels_autoaugment_notop.h5" in proc.stderr


def test_encoder_weights_come_from_the_keras_cache(synth_data, tmp_path):
    # where the weights come from is the point, not learning: the 60-case set is enough, and
    # EfficientNetB0 (a third fewer layers to build, trace, save and load than the default B2)
    # takes the same path from the Keras cache; the default's file name is checked offline above
    from breastus_cli import backend
    from breastus_cli.models.weights import imagenet_file

    backend.sm()
    import efficientnet.tfkeras as eff

    keras = backend.keras()
    keras_home = tmp_path / "keras"
    keras.utils.set_random_seed(5)
    encoder = eff.EfficientNetB0(include_top=False, weights=None, input_shape=(64, 64, 3))
    saved = str(keras_home / "models" / imagenet_file("efficientnetb0").file_name)
    Path(saved).parent.mkdir(parents=True)
    encoder.save_weights(saved)  # what 'breastus weights download' would have put there
    run = tmp_path / "run"
    proc = run_cli("train-seg", str(synth_data), "--backbone", "efficientnetb0", "--weights",
                   "imagenet", "--offline", "--img-size", "64", "--epochs", "1",
                   "--freeze-encoder", "--run-dir", str(run), env={"KERAS_HOME": str(keras_home)})
    assert proc.returncode == 0, proc.stderr
    assert json.loads((run / "config.json").read_text())["weights"]["backbone_file"] == saved
    from breastus_cli.engine.apply.loaded_run import load_model

    unet = load_model(run).get_layer("unet")
    for name in ("stem_conv", "block1a_dwconv", "block3b_expand_conv", "top_conv"):
        np.testing.assert_array_equal(unet.get_layer(name).get_weights()[0],
                                      encoder.get_layer(name).get_weights()[0], err_msg=name)
