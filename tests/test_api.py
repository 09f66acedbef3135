"""The Python API (breastus_cli.api): the CLI's workflow in-process, results in memory and on
disk alike; unknown options refused before any work."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from conftest import _reset_keras, copy_run
from PIL import Image

from breastus_cli import api
from breastus_cli.errors import UsageError


@pytest.fixture(autouse=True)
def _fresh_keras():
    yield
    _reset_keras()


@pytest.fixture(scope="module")
def api_data(tmp_path_factory) -> Path:
    """A small synthetic source prepared and split through the API."""
    from breastus_cli.data.synth import SynthSettings, make_synthetic_breast

    root = tmp_path_factory.mktemp("api")
    make_synthetic_breast(SynthSettings(out=root / "src", cases=40, seed=3, min_side=64,
                                        max_side=96))
    prepared = api.prepare(str(root / "src"), root / "data")
    assert prepared.kept == sum(prepared.counts.values()) > 30
    assert (root / "data" / "manifest.csv").is_file()
    result = api.split(root / "data", seed=1, folds=0)
    splits = pd.read_csv(root / "data" / "splits.csv")
    assert set(splits["split"]) == {"train", "val", "test"}
    assert sum(sum(c.values()) for c in result.table.values()) == len(splits) == prepared.kept
    assert "fold" not in splits  # folds=0: none, as the CLI's default
    return root / "data"


def test_importing_the_api_stays_light():
    code = ("import sys, breastus_cli; breastus_cli.api.predict; "
            "print(sorted(m for m in ('tensorflow', 'pandas', 'typer') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


@pytest.mark.parametrize("call, named, hint", [
    (lambda p: api.prepare(p / "src", p / "out", fromat="busi"), "fromat", "format"),
    (lambda p: api.split(p, sed=1), "sed", "seed"),
    (lambda p: api.train("cls", p, epoch=1, run_dir=p / "run"), "epoch", "epochs"),
    (lambda p: api.train_seg(p, backbone="vgg16", lossy="dice"), "lossy", "loss"),
    (lambda p: api.evaluate(p, bootstrap=10), "bootstrap", "n_bootstrap"),
    (lambda p: api.predict(p, p / "out", cls_run=p, batchsize=4, foo=1), "batchsize",
     "batch_size"),
])
def test_unknown_options_are_refused_before_any_work(tmp_path, call, named, hint):
    (tmp_path / "config.json").write_text('{"task": "cls"}')  # evaluate's run check passes
    before = sorted(tmp_path.rglob("*"))
    with pytest.raises(api.OptionError) as caught:
        call(tmp_path)
    assert isinstance(caught.value, TypeError) and isinstance(caught.value, UsageError)
    assert f"'{named}'" in str(caught.value) and f"did you mean '{hint}'" in str(caught.value)
    assert sorted(tmp_path.rglob("*")) == before  # nothing written


def test_bad_task_and_bad_values_raise_usage_errors(tmp_path):
    with pytest.raises(UsageError, match="'cls' or 'seg'"):
        api.train("det", tmp_path)
    with pytest.raises(UsageError, match="--img-size"):
        api.train("cls", tmp_path, img_size=33)


@pytest.mark.parametrize("call, named", [
    (lambda p: api.train("cls", p, img_size="big", run_dir=p / "run"), "img_size='big'"),
    (lambda p: api.train_seg(p, epochs=[3]), "epochs"),
    (lambda p: api.split(p, folds="three"), "folds='three'"),
    (lambda p: api.split(p, ratio="0.8 0.1 0.1"), "ratio"),
    (lambda p: api.predict(p, p / "out", cls_run=p, threshold="high"), "threshold='high'"),
    (lambda p: api.prepare(p / "src", 123), "out=123"),
    (lambda p: api.prepare(p / "src", p / "out", strict="sometimes"), "strict"),
    (lambda p: api.predict(123, p / "out", cls_run=p), "inputs=123"),
    (lambda p: api.predict([p, 5], p / "out", cls_run=p), "inputs[1]"),
    (lambda p: api.predict(p, 7, cls_run=p), "out=7"),
    (lambda p: api.evaluate(3.5), "run=3.5"),
    (lambda p: api.evaluate(p, n_bootstrap="many"), "n_bootstrap='many'"),
])
def test_values_of_the_wrong_type_raise_the_cli_error_naming_them(tmp_path, call, named):
    """A bare TypeError before (issue 28): now the CLI's error type, naming the argument and
    its value, before anything is written."""
    (tmp_path / "config.json").write_text('{"task": "cls"}')  # evaluate's run check passes
    before = sorted(tmp_path.rglob("*"))
    with pytest.raises(UsageError) as caught:
        call(tmp_path)
    assert isinstance(caught.value, api.OptionError) and isinstance(caught.value, TypeError)
    assert named in str(caught.value) and "\n" not in str(caught.value)
    assert sorted(tmp_path.rglob("*")) == before  # nothing written


def test_values_the_cli_would_take_are_converted_as_typer_does(tmp_path):
    """Text that the command line would accept is accepted as the CLI converts it, and the
    settings' own checks (ranges) still apply."""
    data = tmp_path / "d"
    data.mkdir()
    rows = [{"case_id": f"{lab[0]}{i:02d}", "patient_id": f"{lab[0]}{i:02d}",
             "image": f"cls/{lab}/{i}.png", "mask": "", "label": lab}
            for lab in ("benign", "malignant") for i in range(10)]
    pd.DataFrame(rows).to_csv(data / "manifest.csv", index=False)
    result = api.split(str(data), folds="2", seed=np.int64(3), ratio=[0.6, 0.2, 0.2])
    assert sorted(result.fold_table) == [0, 1]
    assert sum(result.table["train"].values()) == 12
    with pytest.raises(UsageError, match="--img-size"):
        api.train("cls", data, img_size="33")
    with pytest.raises(UsageError, match="--threshold"):
        api.predict(data, tmp_path / "out", cls_run=data, threshold="1.5")
    assert not (tmp_path / "out").exists()


def test_train_and_evaluate_return_what_they_write(api_data, tmp_path):
    run = tmp_path / "run"
    epochs = []
    trained = api.train("cls", str(api_data), model="smallcnn", weights="none", img_size=32,
                        epochs=2, lr=1e-3, batch_size=8, run_dir=str(run),
                        on_epoch=lambda *a: epochs.append(a[0]))
    assert trained.run_dir == run and (run / "model.keras").is_file()
    assert trained.epochs_run == 2 and len(epochs) == 2
    config = json.loads((run / "config.json").read_text())
    assert config["settings"]["model"] == "smallcnn" and config["settings"]["img_size"] == 32

    ev = api.evaluate(run, n_bootstrap=50)
    assert ev.task == "cls" and ev.split == "test" and ev.out_dir == run / "eval-test"
    assert ev.metrics == json.loads((ev.out_dir / "metrics.json").read_text())
    pd.testing.assert_frame_equal(ev.cases, pd.read_csv(ev.out_dir / "predictions.csv"),
                                  check_dtype=False)
    assert (ev.out_dir / "report.md").is_file() and all(f.is_file() for f in ev.files)


def test_evaluate_a_segmenter(seg_run, tmp_path):
    run = copy_run(seg_run, tmp_path / "seg")
    ev = api.evaluate(run, n_bootstrap=50)
    assert ev.task == "seg"
    assert ev.metrics == json.loads((run / "eval-test" / "metrics.json").read_text())
    pd.testing.assert_frame_equal(ev.cases, pd.read_csv(run / "eval-test" / "per_case.csv"),
                                  check_dtype=False)


@pytest.fixture(scope="module")
def few_scans(learn_data) -> list[Path]:
    """Five test images of different sizes."""
    splits = pd.read_csv(learn_data / "splits.csv")
    manifest = pd.read_csv(learn_data / "manifest.csv")
    test = manifest[manifest["case_id"].isin(splits[splits["split"] == "test"]["case_id"])]
    return [learn_data / p for p in test["image"].head(5)]


def test_predict_returns_the_written_table_and_masks(few_scans, cls_run, seg_run, tmp_path):
    out = tmp_path / "out"
    res = api.predict([str(p) for p in few_scans], out, cls_run=cls_run, seg_run=seg_run)
    assert res.out == out and res.result.rows == len(few_scans)
    pd.testing.assert_frame_equal(res.predictions, pd.read_csv(out / "predictions.csv"))
    assert len(res.errors) == 0 and list(res.errors.columns) == ["path", "reason"]
    assert set(res.predictions["label"]) <= {"benign", "malignant"}
    assert sorted(res.masks) == list(range(len(few_scans)))
    for i, row in res.predictions.iterrows():
        mask = res.masks[i]
        with Image.open(row["path"]) as image:
            assert mask.shape == (image.height, image.width)
        assert mask.dtype == bool and int(mask.sum()) == row["lesion_area_px"]
        assert np.array_equal(mask, np.asarray(Image.open(out / row["mask"])) > 127)

    # out=None: a temporary folder, gone on return; the same results in memory
    mem = api.predict(few_scans, cls_run=cls_run, seg_run=seg_run, batch_size=2)
    assert mem.out is None and not mem.result.out.exists()
    pd.testing.assert_frame_equal(mem.predictions.drop(columns="seconds"),
                                  res.predictions.drop(columns="seconds"))
    assert isinstance(mem.masks, dict) and len(mem.masks) == len(few_scans)
    assert all(np.array_equal(mem.masks[i], res.masks[i]) for i in res.masks)


def test_predict_classifier_only_has_no_masks(few_scans, cls_run, tmp_path):
    res = api.predict(few_scans[0], tmp_path / "out", cls_run=cls_run, threshold=0.0)
    assert len(res.predictions) == 1 and res.predictions["label"].iloc[0] == "malignant"
    assert len(res.masks) == 0 and not (tmp_path / "out" / "masks").exists()
