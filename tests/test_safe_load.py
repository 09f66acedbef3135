"""Model files never run code: only the native zip ``.keras`` format, with a config whose
module and class names breastus and its libraries register, is deserialized (issue 11)."""

from __future__ import annotations

import json
import shutil
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest

from conftest import run_cli

REFUSED = "not a safe Keras model file"
ZEN = "Beautiful is better than ugly"
TINY_CLS = ["--model", "smallcnn", "--weights", "none", "--img-size", "32", "--batch-size", "16",
            "--epochs", "1", "--no-augment"]


# ---- crafted files ---------------------------------------------------------------------------
def _rewrite_config(source: Path, target: Path, edit) -> None:
    """Copy a .keras zip, passing its config.json through ``edit``."""
    with zipfile.ZipFile(source) as zin, zipfile.ZipFile(target, "w") as zout:
        for item in zin.infolist():
            data = zin.read(item.filename)
            if item.filename == "config.json":
                config = json.loads(data)
                edit(config)
                data = json.dumps(config).encode()
            zout.writestr(item.filename, data)


def _layers(config: dict) -> list[dict]:
    return config["config"]["layers"]


@pytest.fixture(scope="module")
def tiny_data(synth_data, tmp_path_factory) -> Path:
    data = tmp_path_factory.mktemp("safe") / "data"
    shutil.copytree(synth_data, data)
    return data


@pytest.fixture(scope="module")
def tiny_run(tiny_data, tmp_path_factory) -> Path:
    """A real smallcnn run saved by breastus (1 epoch at 32 px)."""
    run = tmp_path_factory.mktemp("safe-runs") / "smallcnn"
    proc = run_cli("train-cls", str(tiny_data), *TINY_CLS, "--run-dir", str(run))
    assert proc.returncode == 0, proc.stderr
    assert zipfile.is_zipfile(run / "model.keras")
    return run


@pytest.fixture(scope="module")
def lambda_run(tiny_run, tmp_path_factory) -> tuple[Path, Path]:
    """(run, marker): the run's model.keras replaced by a legacy HDF5 model whose Lambda layer
    writes ``marker`` whenever it is called, as Keras does while rebuilding the model."""
    from breastus_cli import backend

    keras = backend.keras()
    root = tmp_path_factory.mktemp("lambda")
    marker = root / "marker.txt"
    run = root / "run"
    shutil.copytree(tiny_run, run)
    code = eval(f"lambda x: (open({str(marker)!r}, 'a').write('ran\\n'), x)[1]")  # noqa: S307
    inputs = keras.Input(shape=(32, 32, 1), name="image")
    x = keras.layers.Lambda(code, name="evil")(inputs)
    x = keras.layers.GlobalAveragePooling2D()(x)
    outputs = keras.layers.Dense(2, activation="softmax")(x)
    legacy = root / "legacy.h5"
    keras.Model(inputs, outputs).save(legacy, save_format="h5")
    shutil.copyfile(legacy, run / "model.keras")
    # The hazard is real: a plain Keras load of this file runs the code, safe_mode or not.
    marker.unlink(missing_ok=True)
    keras.models.load_model(run / "model.keras", compile=False, safe_mode=True)
    assert marker.is_file()
    marker.unlink()
    return run, marker


@pytest.fixture(scope="module")
def module_run(tiny_run, tmp_path_factory) -> Path:
    """The run's model.keras rewritten (still a valid zip) so that one layer's module is
    ``this``: importing it prints the Zen of Python."""
    run = tmp_path_factory.mktemp("module") / "run"
    shutil.copytree(tiny_run, run)

    def edit(config: dict) -> None:
        config["module"] = "this"  # Keras imports the top-level object's module to find it
        head = next(layer for layer in _layers(config) if layer["config"]["name"] == "head")
        head["module"] = "this"

    _rewrite_config(tiny_run / "model.keras", run / "model.keras", edit)
    return run


def _commands(run: Path, data: Path, tmp: Path) -> dict[str, list[str]]:
    image = next((data / "seg" / "images").glob("*.png"))
    return {
        "predict": ["predict", str(image), "--cls-run", str(run), "--out", str(tmp / "pred")],
        "evaluate": ["evaluate", str(run), "--bootstrap", "10"],
        "export": ["export", str(run)],
        "train-cls": ["train-cls", str(data), *TINY_CLS[:2], "--weights", str(run),
                      *TINY_CLS[4:], "--run-dir", str(tmp / "new-run")],
    }


def _cli(args: list[str], capsys) -> tuple[int, str, str]:
    from breastus_cli.cli.app import main

    with pytest.raises(SystemExit) as exc:
        main(args)
    captured = capsys.readouterr()
    return int(exc.value.code or 0), captured.out, captured.err


# ---- the malicious files are refused, and nothing in them runs ---------------------------------
@pytest.mark.parametrize("command", ["predict", "evaluate", "export", "train-cls"])
def test_legacy_hdf5_lambda_model_is_refused_and_never_runs(command, lambda_run, tiny_data,
                                                           tmp_path, capsys):
    run, marker = lambda_run
    code, out, err = _cli(_commands(run, tiny_data, tmp_path)[command], capsys)
    assert not marker.exists(), "the Lambda layer's code ran"
    assert code == 2, err
    errors = [line for line in err.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and REFUSED in errors[0] and "HDF5" in errors[0], err
    assert "Traceback" not in err
    assert not (tmp_path / "new-run").exists()  # train-cls refuses before making its run


@pytest.mark.parametrize("command", ["predict", "evaluate", "train-cls"])
def test_module_reference_is_refused_before_anything_is_imported(command, module_run,
                                                                tiny_data, tmp_path, capsys):
    # in this process (no TensorFlow start-up per command), with 'this' unimported as in a
    # fresh one: importing it would print the Zen and put it back in sys.modules
    args = _commands(module_run, tiny_data, tmp_path)[command]
    sys.modules.pop("this", None)
    code, out, err = _cli(args, capsys)
    assert ZEN not in out
    assert "this" not in sys.modules
    assert code == 2, err
    assert REFUSED in err and "'this'" in err, err
    assert not (tmp_path / "new-run").exists()


# ---- the checker, on small crafted configs ----------------------------------------------------
def _zip(path: Path, config: object, entries: tuple[str, ...] = ("model.weights.h5",)) -> Path:
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("config.json", json.dumps(config))
        archive.writestr("metadata.json", "{}")
        for name in entries:
            archive.writestr(name, b"")
    return path


def _model(*layers: dict) -> dict:
    return {"module": "keras", "class_name": "Sequential", "registered_name": None,
            "config": {"name": "m", "layers": list(layers)}}


def _layer(class_name: str, module: str = "keras.layers", **config) -> dict:
    return {"module": module, "class_name": class_name, "registered_name": None,
            "config": {"name": class_name.lower(), **config}}


_DENSE_FN = _layer("Dense", units=2, kernel_initializer=_layer("GlorotUniform",
                                                               "keras.initializers"))

BAD_CONFIGS = {
    "lambda": (_model(_layer("Lambda", function={"class_name": "__lambda__",
                                                 "config": {"value": "abc"}})), "Lambda"),
    "lambda without module": ({"class_name": "Lambda", "config": {}}, "Lambda"),
    "tf op lambda": (_model(_layer("TFOpLambda", "tf_keras.src.layers.core.tf_op_layer",
                                   function="io.write_file")), "TFOpLambda"),
    "python lambda": (_model(_layer("Dense", activation={"class_name": "__lambda__",
                                                         "config": {"value": "x"}})), "lambda"),
    "module this": (_model(_layer("Dense", "this")), "'this'"),
    "keras-like module": (_model(_layer("Dense", "keras_evil")), "'keras_evil'"),
    "internal module": (_model(_layer("Dense", "tf_keras.src.utils.generic_utils")),
                        "tf_keras.src.utils"),
    "dotted class": (_model(_layer("layers.Lambda", "keras")), "layers.Lambda"),
    "function from os": (_model(_layer("Dense", activation={
        "module": "os", "class_name": "function", "config": "system",
        "registered_name": "system"})), "'os'"),
    "builtins eval": (_model(_layer("Dense", activation={
        "module": "builtins", "class_name": "function", "config": "eval",
        "registered_name": "function"})), "eval"),
    "builtins class": (_model(_layer("object", "builtins")), "builtins"),
    "breastus name from elsewhere": (_model(_layer("SegLoss", "breastus_cli.engine.tasks")),
                                     "SegLoss"),
    "function_type key": (_model(_layer("Dense", function="f", function_type="function")),
                          "function"),
    "not an object": ([1, 2], "config"),
}


@pytest.mark.parametrize("name", list(BAD_CONFIGS))
def test_check_refuses_unsafe_configs(name, tmp_path):
    from breastus_cli.errors import InputError
    from breastus_cli.models.safe_load import check_model_file

    config, reason = BAD_CONFIGS[name]
    path = _zip(tmp_path / "model.keras", config)
    with pytest.raises(InputError) as exc:
        check_model_file(path)
    assert exc.value.exit_code == 2
    assert exc.value.message.startswith(f"{REFUSED}: {path}: "), exc.value.message
    assert reason in exc.value.message, exc.value.message


def test_check_refuses_other_containers(tmp_path):
    from breastus_cli.errors import InputError
    from breastus_cli.models.safe_load import check_model_file

    good = _model(_DENSE_FN)
    cases = {
        "hdf5": (tmp_path / "a" / "model.keras", "HDF5"),
        "text": (tmp_path / "b" / "model.keras", "zip"),
        "no weights": (_zip(tmp_path / "c.keras", good, entries=()), "model.weights"),
        "extra entry": (_zip(tmp_path / "d.keras", good,
                             entries=("model.weights.h5", "assets/x.py")), "assets/x.py"),
        "suffix": (_zip(tmp_path / "e.h5", good), ".keras"),
        "bad json": (tmp_path / "f.keras", "config.json"),
    }
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "model.keras").write_bytes(b"\x89HDF\r\n\x1a\n" + b"\0" * 64)
    (tmp_path / "b").mkdir()
    (tmp_path / "b" / "model.keras").write_text("hello")
    with zipfile.ZipFile(tmp_path / "f.keras", "w") as archive:
        archive.writestr("config.json", "{not json")
        archive.writestr("model.weights.h5", b"")
    for name, (path, reason) in cases.items():
        with pytest.raises(InputError) as exc:
            check_model_file(path)
        assert exc.value.message.startswith(f"{REFUSED}: {path}: "), (name, exc.value.message)
        assert reason in exc.value.message, (name, exc.value.message)


def test_check_accepts_what_keras_writes_for_plain_values(tmp_path):
    from breastus_cli.models.safe_load import check_model_file

    config = _model(_layer("Dense", units=1, activation={
        "module": "builtins", "class_name": "function", "config": "relu",
        "registered_name": "function"}))
    config["compile_config"] = {"loss": {"module": "breastus_cli.models.seg_objectives",
                                         "class_name": "SegLoss", "config": {},
                                         "registered_name": "breastus>SegLoss"}}
    assert check_model_file(_zip(tmp_path / "model.keras", config))["class_name"] == "Sequential"


def test_allowlisted_custom_names_are_the_registered_ones():
    from breastus_cli import backend
    from breastus_cli.engine.training import tasks  # noqa: F401
    from breastus_cli.models import safe_load, seg_objectives  # noqa: F401

    backend.sm()
    registry = backend.keras().saving.get_custom_objects()
    for (module, name), registered in safe_load.CUSTOM_OBJECTS.items():
        assert registered in registry, registered
        assert registry[registered].__module__ == module
        assert registry[registered].__name__ == name


# ---- real breastus models still load ----------------------------------------------------------
def test_weights_over_the_memory_cap_load_through_the_archive(tiny_run, monkeypatch):
    """Weights above MAX_WEIGHTS_IN_MEMORY are not read into memory whole: Keras's own loader
    reads them from the archive, and the model is the same."""
    import numpy as np

    from breastus_cli.models import safe_load

    fast = safe_load.load_keras_model(tiny_run / "model.keras")
    calls = []
    keras_load = safe_load.backend.keras().models.load_model
    monkeypatch.setattr(safe_load, "MAX_WEIGHTS_IN_MEMORY", 0)
    monkeypatch.setattr(safe_load.backend.keras().models, "load_model",
                        lambda *a, **k: calls.append(a) or keras_load(*a, **k))
    slow = safe_load.load_keras_model(tiny_run / "model.keras")
    assert len(calls) == 1
    for ours, theirs in zip(fast.get_weights(), slow.get_weights(), strict=True):
        np.testing.assert_array_equal(ours, theirs)


def test_real_models_load_through_the_safe_loader(tiny_run, seg_run, tmp_path):
    from breastus_cli import backend
    from breastus_cli.engine.training import tasks
    from breastus_cli.engine.apply.loaded_run import load_model
    from breastus_cli.models import seg_objectives as so
    from breastus_cli.models.safe_load import load_keras_model

    keras = backend.keras()
    classifier = load_model(tiny_run)
    assert classifier.output_shape == (None, 2)

    # the session's trained U-Net (EfficientNetB2 encoder), saved uncompiled as training does
    path = seg_run / "model.keras"
    names = json.dumps(json.loads(zipfile.ZipFile(path).read("config.json")))
    assert "FixedDropout" in names and "swish" in names
    loaded = load_keras_model(path)
    # the same weights Keras itself reads from the file (its own loader, safe mode)
    reference = keras.models.load_model(path, compile=False, safe_mode=True)
    batch = np.random.default_rng(0).uniform(0, 255, (1, 64, 64, 1)).astype("float32")
    np.testing.assert_allclose(loaded(batch).numpy(), reference(batch).numpy(), atol=1e-5)
    # (the weights are read from memory, not through the zip member: every one equal)
    assert [w.name for w in loaded.weights] == [w.name for w in reference.weights]
    for ours, theirs in zip(loaded.get_weights(), reference.get_weights(), strict=True):
        np.testing.assert_array_equal(ours, theirs)
    assert loaded.get_config() == reference.get_config()

    # A compiled model: breastus's registered loss and metrics in compile_config pass too.
    small = keras.Sequential([keras.Input((4,)), keras.layers.Dense(2, activation="softmax")])
    small.compile(optimizer="adam", loss=so.SegLoss("dice"),
                  metrics=[tasks.MalignantAUC(), so.MeanOverlap(), "accuracy"])
    small.save(tmp_path / "compiled.keras")
    assert load_keras_model(tmp_path / "compiled.keras").output_shape == (None, 2)
