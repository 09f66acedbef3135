"""breastus export: TFLite (float32, float16, int8) and SavedModel, their agreement with the Keras
model, metadata.json, the TFLite runner predict uses, and bad options, through the real CLI."""

from __future__ import annotations

import json
import shutil
import warnings
from pathlib import Path

import numpy as np
import pytest

from conftest import copy_run, run_cli

FLOAT_TOL = 1e-3     # float32 TFLite vs Keras, max |difference| of probabilities
FLOAT16_TOL = 1e-2   # float16 weights
INT8_LABELS = 0.9    # int8: share of test images with the same label (cls)


@pytest.fixture(scope="session")
def cls_export_run(cls_run, tmp_path_factory) -> Path:
    """A writable copy of the shared trained classifier (export writes RUN/export/)."""
    return copy_run(cls_run, tmp_path_factory.mktemp("export-runs") / "cls")


@pytest.fixture(scope="session")
def seg_export_run(seg_run, tmp_path_factory) -> Path:
    """A writable copy of the shared trained U-Net (EfficientNetB2 encoder)."""
    return copy_run(seg_run, tmp_path_factory.mktemp("export-runs") / "seg")


def _test_images(learn_data: Path, n: int = 32) -> np.ndarray:
    from breastus_cli.data.pipeline import load_arrays
    from breastus_cli.data.split import select_cases

    paths = list(select_cases(learn_data, "test")["image_path"])[:n]
    return load_arrays(paths, 64).astype(np.float32)


def _keras_outputs(run: Path, images: np.ndarray) -> np.ndarray:
    from breastus_cli.engine.apply.loaded_run import load_model

    model = load_model(run)
    return np.concatenate([model(images[i:i + 16], training=False).numpy()
                           for i in range(0, len(images), 16)])


@pytest.fixture(scope="session")
def cls_reference(cls_export_run, learn_data) -> tuple[np.ndarray, np.ndarray]:
    images = _test_images(learn_data)
    return images, _keras_outputs(cls_export_run, images)


def _export(run: Path, *args: str) -> dict:
    proc = run_cli("export", str(run), *args)
    assert proc.returncode == 0, proc.stderr
    assert "Traceback" not in proc.stderr
    out = Path(args[args.index("--out") + 1]) if "--out" in args else run / "export"
    return json.loads((out / "metadata.json").read_text())


def _no_leftovers(folder: Path) -> None:
    assert not [p.name for p in folder.iterdir() if p.name.startswith(".")], \
        "temporary files left behind"


# ---- classification ------------------------------------------------------------------------
def test_float_tflite_agrees_with_keras_and_metadata_says_how_to_use_it(
        cls_export_run, cls_reference):
    from breastus_cli import __version__
    from breastus_cli.engine.export.export import TFLiteModel, read_export_metadata

    meta = _export(cls_export_run)
    export = cls_export_run / "export"
    model_file = export / "model.tflite"
    assert model_file.is_file()
    _no_leftovers(export)
    config = json.loads((cls_export_run / "config.json").read_text())
    assert meta["task"] == "cls" and meta["format"] == "tflite" and meta["quantize"] == "none"
    assert meta["file"] == "model.tflite" and meta["size_bytes"] == model_file.stat().st_size
    assert meta["input"]["size"] == 64 and meta["input"]["channels"] == 1
    assert meta["input"]["range"] == [0, 255]
    assert meta["input"]["preprocessing"] == "inside the model"
    assert meta["labels"] == ["benign", "malignant"] and meta["positive_label"] == "malignant"
    assert meta["threshold"] == config["threshold"]
    assert meta["roi"] == config.get("roi") and (meta["roi"] or {}).get("source", "none") == "none"
    assert meta["source_run"] == str(cls_export_run.resolve())
    assert meta["breastus_version"] == __version__
    assert meta["exports"]["model.tflite"]["agreement"] == meta["agreement"]
    agreement = meta["agreement"]
    assert agreement["samples"] == 32 and agreement["sample_source"].startswith("test split")
    assert agreement["max_abs_diff"] <= FLOAT_TOL and agreement["within_tolerance"] is True
    assert agreement["label_agreement"] == 1.0
    assert read_export_metadata(export) == meta == read_export_metadata(model_file)

    images, reference = cls_reference
    lite = TFLiteModel(model_file)
    assert lite.input_size == 64 and lite.task == "cls" and lite.metadata["threshold"] == 0.5
    outputs = lite.predict(images)
    assert outputs.shape == (len(images), 2) and outputs.dtype == np.float32
    assert np.abs(outputs - reference).max() <= FLOAT_TOL


def test_tflite_runner_batches_of_any_size_give_the_same_per_image_outputs(
        cls_export_run, cls_reference):
    from breastus_cli.engine.export.export import MAX_BATCH, TFLiteModel
    from breastus_cli.errors import InputError

    model_file = cls_export_run / "export" / "model.tflite"
    if not model_file.is_file():
        _export(cls_export_run)
    images, _ = cls_reference
    lite = TFLiteModel(model_file, num_threads=1)
    ones = np.concatenate([lite.predict(images[i:i + 1]) for i in range(5)])
    five = lite.predict(images[:5])
    np.testing.assert_allclose(ones, five, atol=1e-6)
    np.testing.assert_allclose(lite.predict(images[:1]), ones[:1], atol=1e-6)  # back to 1
    many = np.concatenate([images] * 2)  # more than one invoke's worth
    assert len(many) > MAX_BATCH
    np.testing.assert_allclose(lite.predict(many)[:5], five, atol=1e-6)
    np.testing.assert_allclose(lite.predict(images[:3, ..., 0]), five[:3], atol=1e-6)  # (N,S,S)
    assert lite.predict(images[:0]).shape == (0, 2)
    with pytest.raises(InputError, match=r"\(N, 64, 64, 1\)"):
        lite.predict(np.zeros((2, 32, 32, 1), np.float32))
    # predict puts two batches in a model at once only where its runner allows it: a Keras
    # model's compiled function, never a TFLite interpreter (one set of tensors)
    from breastus_cli.engine.apply.inference import open_run

    assert open_run(cls_export_run).concurrent is True
    assert open_run(cls_export_run, engine="tflite").concurrent is False
    assert open_run(model_file).concurrent is False


def test_float16_is_smaller_and_agrees_within_its_tolerance(cls_export_run, cls_reference):
    from breastus_cli.engine.export.export import TFLiteModel

    meta = _export(cls_export_run, "--quantize", "float16")
    export = cls_export_run / "export"
    assert meta["quantize"] == "float16" and meta["file"] == "model-float16.tflite"
    assert "float16 weights" in meta["conversion"]["quantization"]
    assert meta["agreement"]["max_abs_diff"] <= FLOAT16_TOL
    assert meta["agreement"]["tolerance"] == FLOAT16_TOL
    images, reference = cls_reference
    lite = TFLiteModel(export / "model-float16.tflite")
    assert lite.metadata["quantize"] == "float16"
    assert np.abs(lite.predict(images) - reference).max() <= FLOAT16_TOL
    if (export / "model.tflite").is_file():
        assert meta["size_bytes"] < 0.7 * (export / "model.tflite").stat().st_size


def test_int8_full_integer_agrees_on_the_label_for_most_test_images(
        cls_export_run, cls_reference, learn_data):
    from breastus_cli import backend
    from breastus_cli.data.split import select_cases
    from breastus_cli.engine.export.export import TFLiteModel

    meta = _export(cls_export_run, "--quantize", "int8", "--representative", "40",
                   "--samples", "20")
    model_file = cls_export_run / "export" / "model-int8.tflite"
    # the agreement check compares on the number of test cases asked for
    assert meta["agreement"]["samples"] == 20
    assert meta["agreement"]["sample_source"] == "test split (20 images)"
    conversion = meta["conversion"]
    assert conversion["int8_mode"] == "full-integer"
    assert conversion["representative_source"] == "training split"
    train = select_cases(learn_data, "train")
    n_train = int(train["label"].isin(["benign", "malignant"]).sum())
    assert conversion["representative_images"] == min(40, n_train)
    # balanced by class: each class gives half, or all it has when it has fewer
    counts = train["label"].value_counts()
    half = min(40, n_train) // 2
    assert conversion["representative_classes"] == {
        c: min(int(counts[c]), max(half, min(40, n_train) - int(counts[o])))
        for c, o in (("benign", "malignant"), ("malignant", "benign"))}
    # int8 kernels inside, float32 at the edges
    tf = backend.tf()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # tf.lite.Interpreter's deprecation notice
        interpreter = tf.lite.Interpreter(model_path=str(model_file))
    assert interpreter.get_input_details()[0]["dtype"] == np.float32
    assert interpreter.get_output_details()[0]["dtype"] == np.float32
    assert any(t["dtype"] == np.int8 for t in interpreter.get_tensor_details())

    images, reference = cls_reference
    lite = TFLiteModel(model_file)
    assert lite.metadata["quantize"] == "int8"
    outputs = lite.predict(images)
    same = float(((outputs[:, 1] >= 0.5) == (reference[:, 1] >= 0.5)).mean())
    print(f"int8 label agreement with Keras: {same:.3f} on {len(images)} test images; "
          f"max |dp| {np.abs(outputs - reference).max():.4f}; "
          f"metadata says {meta['agreement']['label_agreement']:.3f}")
    assert same >= INT8_LABELS
    assert meta["agreement"]["label_agreement"] >= INT8_LABELS
    # one metadata.json lists every export of this model in the folder
    again = json.loads((cls_export_run / "export" / "metadata.json").read_text())
    assert "model-int8.tflite" in again["exports"]


def test_int8_mixed_keeps_the_first_layers_float_and_agrees(cls_export_run, cls_reference,
                                                            tmp_path):
    from breastus_cli import backend
    from breastus_cli.engine.export.export import GREY_INPUT_FOLDED, TFLiteModel

    out = tmp_path / "mixed"
    meta = _export(cls_export_run, "--quantize", "int8-mixed", "--representative", "40",
                   "--samples", "20", "--out", str(out))
    conversion = meta["conversion"]
    assert meta["quantize"] == "int8-mixed"
    assert conversion["int8_mode"] == "first-layers-float"
    # the grey copy folded into the first convolution, the preprocessing and the backbone's
    # first half of layers named in float32
    assert conversion["grey_input"] == GREY_INPUT_FOLDED
    floats = conversion["float_layers"]
    assert floats[0] == "preprocess" and floats[1].startswith("backbone/")
    assert "float32" in conversion["quantization"]
    model_file = out / "model-int8-mixed.tflite"
    tf = backend.tf()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # tf.lite.Interpreter's deprecation notice
        interpreter = tf.lite.Interpreter(model_path=str(model_file))
    interpreter.allocate_tensors()
    tensors = {t["index"]: t for t in interpreter.get_tensor_details()}
    convs = [op for op in interpreter._get_ops_details() if op["op_name"] == "CONV_2D"]
    assert tensors[convs[0]["inputs"][0]]["dtype"] == np.float32  # first convolution: float
    assert tensors[convs[-1]["inputs"][0]]["dtype"] == np.int8  # last one: int8

    images, reference = cls_reference
    outputs = TFLiteModel(model_file).predict(images)
    same = float(((outputs[:, 1] >= 0.5) == (reference[:, 1] >= 0.5)).mean())
    assert same >= INT8_LABELS
    assert meta["agreement"]["min_label_agreement"] == 0.95  # checked as int8 is


def test_savedmodel_loads_with_tf_and_gives_the_same_outputs(cls_export_run, cls_reference,
                                                             tmp_path):
    from breastus_cli import backend

    out = tmp_path / "deploy"
    meta = _export(cls_export_run, "--format", "savedmodel", "--out", str(out))
    assert meta["format"] == "savedmodel" and meta["file"] == "savedmodel"
    assert meta["agreement"]["max_abs_diff"] <= 1e-5
    images, reference = cls_reference
    tf = backend.tf()
    loaded = tf.saved_model.load(str(out / "savedmodel"))
    signature = loaded.signatures["serving_default"]
    result = signature(image=tf.constant(images))
    np.testing.assert_allclose(next(iter(result.values())).numpy(), reference, atol=1e-5)
    np.testing.assert_allclose(loaded.serve(images).numpy(), reference, atol=1e-5)
    # exported again: replaced whole, atomically
    _export(cls_export_run, "--format", "savedmodel", "--out", str(out))
    _no_leftovers(out)
    assert (out / "savedmodel" / "saved_model.pb").is_file()


def test_every_conversion_path_gives_the_same_model(cls_export_run, cls_reference, tmp_path):
    from breastus_cli.engine.export.export import CONVERSION_METHODS, TFLiteModel, convert_tflite
    from breastus_cli.engine.apply.loaded_run import load_model

    images, reference = cls_reference
    model = load_model(cls_export_run)
    for method in CONVERSION_METHODS:
        content, info = convert_tflite(model, 64, "none", methods=(method,))
        path = tmp_path / f"{method}.tflite"
        path.write_bytes(content)
        assert np.abs(TFLiteModel(path).predict(images[:8]) - reference[:8]).max() <= FLOAT_TOL, \
            info["method"]


def test_without_the_dataset_float_uses_synthetic_samples_and_int8_says_why_not(
        cls_export_run, tmp_path):
    moved = tmp_path / "moved-run"
    moved.mkdir()
    for name in ("config.json", "model.keras"):
        shutil.copy(cls_export_run / name, moved / name)
    config = json.loads((moved / "config.json").read_text())
    config["data"]["path"] = str(tmp_path / "gone")
    config["settings"]["data"] = str(tmp_path / "gone")
    (moved / "config.json").write_text(json.dumps(config))
    meta = _export(moved)
    assert meta["agreement"]["sample_source"].startswith("synthetic")
    assert meta["agreement"]["max_abs_diff"] <= FLOAT_TOL
    proc = run_cli("export", str(moved), "--quantize", "int8")
    assert proc.returncode == 2, proc.stderr
    assert "--quantize int8" in proc.stderr and "training images" in proc.stderr
    assert "Traceback" not in proc.stderr
    assert not (moved / "export" / "model-int8.tflite").exists()


def test_lesion_centred_classifier_export_says_so_and_calibrates_on_crops(learn_data,
                                                                         tmp_path):
    run = tmp_path / "roi-run"
    proc = run_cli("train-cls", str(learn_data), "--model", "smallcnn", "--weights", "none",
                   "--img-size", "64", "--epochs", "1", "--roi", "mask", "--roi-margin", "0.3",
                   "--run-dir", str(run))
    assert proc.returncode == 0, proc.stderr
    meta = _export(run, "--quantize", "int8", "--representative", "10")
    assert meta["roi"] == {"source": "mask", "margin": 0.3}  # predict crops before classifying
    assert "lesion crops" in meta["agreement"]["sample_source"]
    assert meta["conversion"]["representative_images"] == 10


@pytest.mark.parametrize(
    ("args", "message"),
    [(["--format", "onnx"], "--format must be tflite or savedmodel"),
     (["--quantize", "int4"], "--quantize must be none, float16, int8 or int8-mixed"),
     (["--format", "savedmodel", "--quantize", "int8"],
      "--quantize int8 applies to --format tflite"),
     (["--representative", "0"], "--representative must be at least 1"),
     (["--samples", "0"], "--samples must be at least 1")],
)
def test_bad_options_exit_2_naming_the_option(cls_export_run, args, message, tmp_path):
    proc = run_cli("export", str(cls_export_run), *args, "--out", str(tmp_path / "x"))
    assert proc.returncode == 2, proc.stderr
    assert message in proc.stderr and "Traceback" not in proc.stderr
    assert not (tmp_path / "x").exists()


def test_not_a_run_or_no_model_exit_2(cls_export_run, tmp_path):
    proc = run_cli("export", str(tmp_path / "nowhere"))
    assert proc.returncode == 2 and "run directory not found" in proc.stderr
    proc = run_cli("export", str(tmp_path))
    assert proc.returncode == 2 and "not a breastus run directory" in proc.stderr
    unfinished = tmp_path / "unfinished"
    unfinished.mkdir()
    shutil.copy(cls_export_run / "config.json", unfinished / "config.json")
    proc = run_cli("export", str(unfinished))
    assert proc.returncode == 2 and "no model.keras" in proc.stderr
    assert "Traceback" not in proc.stderr
    assert not (unfinished / "export").exists()


# ---- segmentation --------------------------------------------------------------------------
@pytest.fixture(scope="session")
def seg_reference(seg_export_run, learn_data) -> tuple[np.ndarray, np.ndarray]:
    images = _test_images(learn_data, 12)
    return images, _keras_outputs(seg_export_run, images)


def test_segmenter_float_tflite_agrees_with_keras(seg_export_run, seg_reference):
    from breastus_cli.engine.export.export import TFLiteModel
    from breastus_cli.engine.apply.inference import open_run

    (seg_export_run / "postprocess.json").write_text(json.dumps(  # as evaluate chose it
        {"method": "largest", "validation_dice": {"none": 0.7, "largest": 0.8},
         "n_validation": 4}))
    meta = _export(seg_export_run)
    assert meta["task"] == "seg" and meta["output"]["shape"] == [None, 64, 64, 1]
    # the mask post-processing travels with the file: predict applies it to a bare .tflite
    assert meta["postprocess"] == "largest"
    assert meta["postprocess_source"].startswith("chosen on 4 validation cases")
    assert open_run(seg_export_run / "export" / "model.tflite").postprocess.method == "largest"
    assert meta["labels"] == ["background", "lesion"] and meta["positive_label"] == "lesion"
    agreement = meta["agreement"]
    assert agreement["max_abs_diff"] <= FLOAT_TOL and agreement["within_tolerance"]
    assert agreement["pixel_agreement"] >= 0.999 and agreement["mean_iou"] >= 0.99
    images, reference = seg_reference
    lite = TFLiteModel(seg_export_run / "export" / "model.tflite")
    assert lite.task == "seg" and lite.input_size == 64
    outputs = lite.predict(images)
    assert outputs.shape == (len(images), 64, 64, 1)
    assert np.abs(outputs - reference).max() <= FLOAT_TOL
    np.testing.assert_allclose(lite.predict(images[:1]), outputs[:1], atol=1e-5)


@pytest.mark.slow
def test_segmenter_int8_masks_mostly_agree(seg_export_run, seg_reference):
    meta = _export(seg_export_run, "--quantize", "int8", "--representative", "16")
    agreement = meta["agreement"]
    print(f"int8 U-Net vs Keras: pixel agreement {agreement['pixel_agreement']:.4f}, mean IoU "
          f"{agreement['mean_iou']:.3f}, max |dp| {agreement['max_abs_diff']:.3f}")
    assert meta["conversion"]["int8_mode"] in ("full-integer", "mixed")
    assert agreement["pixel_agreement"] >= 0.95


@pytest.mark.parametrize("labels, n, expected", [
    (["b"] * 30 + ["m"] * 10, 10, {"b": 5, "m": 5}),
    (["b"] * 30 + ["m"] * 3, 10, {"b": 7, "m": 3}),       # the rarer class gives all it has
    (["b"] * 3 + ["m"] * 4, 20, {"b": 3, "m": 4}),         # fewer rows than asked: all of them
    (["b"] * 9 + ["m"] * 9, 7, {"b": 4, "m": 3}),
])
def test_int8_calibration_draw_is_balanced_by_class(labels, n, expected):
    from breastus_cli.engine.export.export_inputs import balanced_draw

    rows = balanced_draw(labels, n, seed=42)
    assert len(set(rows)) == len(rows) == sum(expected.values())
    assert list(rows) == sorted(rows)
    got = {c: sum(labels[i] == c for i in rows) for c in expected}
    assert got == expected
    assert list(balanced_draw(labels, n, seed=42)) == list(rows)  # seeded
