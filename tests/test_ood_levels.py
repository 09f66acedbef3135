"""Issue 31: the multi-level ood_score (engine/apply/ood.py): levels found by shape in every
backbone of the registry, one forward pass for predict, the older single-level statistics still
read, and ``train-cls`` storing the statistics at the end of training."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import pytest

from conftest import FAST_CLS, copy_run, run_cli


def _pooled(keras_model, x):
    from breastus_cli import backend

    keras = backend.keras()
    return keras.Model(keras_model.inputs, keras_model.get_layer("pool").output)(x).numpy()


@pytest.mark.parametrize("architecture", ["smallcnn", "mobilenetv2", "resnet50",
                                          "efficientnet-lite0", "efficientnet-lite2"])
def test_every_registry_backbone_has_levels_found_by_shape(architecture):
    from breastus_cli.engine.apply import ood
    from breastus_cli.models.classifiers import BACKBONES, build_classifier

    assert architecture in BACKBONES
    model = build_classifier(architecture, 64)
    layers = ood.level_layers(model)
    backbone = model.get_layer("backbone")
    sizes = [backbone.get_layer(name.split("/", 1)[1]).output.shape[1] for name in layers]
    # one level per resolution, finest first; the deepest is what the pooling layer pools
    assert len(layers) >= 4 and all(n.startswith("backbone/") for n in layers)
    assert sizes == sorted(set(sizes), reverse=True)
    assert layers[-1] == f"backbone/{backbone.layers[-1].name}"
    widths = [int(backbone.get_layer(n.split("/", 1)[1]).output.shape[-1]) for n in layers]
    assert ood.pooled_model(model, layers).output_shape == (None, sum(widths))


def _tiny_nested(keras):
    """A classifier shaped like breastus's (nested ``backbone``, ``pool``, ``head``), tiny."""
    inner_in = keras.Input((32, 32, 3))
    x = keras.layers.Conv2D(4, 3, padding="same", name="c1")(inner_in)
    x = keras.layers.ZeroPadding2D(1, name="pad")(x)  # 34 px: no level of its own
    x = keras.layers.Conv2D(6, 3, strides=2, name="c2")(x)  # 16 px
    x = keras.layers.Conv2D(8, 3, strides=2, padding="same", name="c3")(x)  # 8 px
    backbone = keras.Model(inner_in, x, name="backbone")
    image = keras.Input((32, 32, 1), name="image")
    y = backbone(keras.layers.Concatenate()([image, image, image]))
    y = keras.layers.GlobalAveragePooling2D(name="pool")(y)
    return keras.Model(image, keras.layers.Dense(2, activation="softmax", name="head")(y))


def test_tiny_model_levels_and_one_pass_give_the_model_output_and_the_levels():
    from breastus_cli import backend
    from breastus_cli.engine.apply import ood
    from breastus_cli.models.classifiers import build_classifier

    keras = backend.keras()
    x = np.random.default_rng(0).uniform(0, 255, (5, 32, 32, 1)).astype(np.float32)
    tiny = _tiny_nested(keras)
    assert ood.level_layers(tiny) == ["backbone/c1", "backbone/c2", "backbone/c3"]
    for model in (tiny, build_classifier("smallcnn", 32)):
        layers = ood.level_layers(model)
        features = ood.pooled_model(model, layers)(x).numpy()
        pooled = _pooled(model, x)
        # the deepest level is the pooled features; the first is the mean of the first layer
        assert np.allclose(features[:, -pooled.shape[1]:], pooled, atol=1e-5)
        probs, both_features = (t.numpy() for t in ood.both_model(model, layers)(x))
        assert np.allclose(probs, model(x).numpy(), atol=1e-6)
        assert np.allclose(both_features, features, atol=1e-5)
    # the backbone runs once: one layer of the one-pass model's graph holds its convolutions
    one_pass = ood.both_model(tiny, ood.level_layers(tiny))
    holders = [layer for layer in one_pass.layers
               if "c2" in {inner.name for inner in getattr(layer, "layers", [])}]
    assert len(holders) == 1
    # no convolution before the pooling: the pooled features alone
    flat = keras.Sequential([keras.Input((32, 32, 1)), keras.layers.GlobalAveragePooling2D(
        name="pool"), keras.layers.Dense(2)])
    assert ood.level_layers(flat) == ["pool"]


def test_a_shift_at_one_early_level_raises_the_combined_score():
    from breastus_cli.engine.apply import ood

    rng = np.random.default_rng(0)
    widths = [8, 30]
    train, val, test = (rng.normal(size=(n, 38)) for n in (400, 200, 200))
    stats = ood.fit(train, val, widths, ["early", "late"])
    assert [lv.components.shape for lv in stats.levels] == [(8, 8), (30, 30)]
    # calibrated: at least 95% of the validation cases <= 1, and about that many
    assert 0.95 <= np.mean(stats.val_scores <= 1.0) < 0.97
    # each level counts alike: the training cases' mean squared distance is 1 at each level
    for d, level in zip(stats.level_distances(train), stats.levels):
        assert np.mean(d ** 2 / level.spread) == pytest.approx(1.0)
    shifted = test.copy()
    shifted[:, :8] += 2.0  # the early level only
    assert np.mean(stats.score(shifted) > 1) > 0.9 > 0.1 > np.mean(stats.score(test) > 1)
    with pytest.raises(Exception, match="width 37"):
        stats.score(test[:, :37])


def _old_kind(run: Path) -> tuple[object, np.ndarray]:
    """Replace ``run``'s statistics with the older single-level kind (the pooled features only,
    as breastus wrote them before the levels); returns them and the validation features."""
    from breastus_cli.engine.apply import ood
    from breastus_cli.engine.apply.loaded_run import load_model
    from breastus_cli.engine.runs.rundir import read_config, run_cases

    config, model = read_config(run), load_model(run)
    train, val = (list(run_cases(config, role)["image_path"]) for role in ("train", "val"))
    feats = {k: ood.features_of_files(model, 64, paths, ["pool"])
             for k, paths in (("train", train), ("val", val))}
    level = ood.fit_level(feats["train"], standardise=False)
    old = ood.FeatureStats([level], ["pool"], 1.0, np.zeros(0))
    old.val_distances = old.distance(feats["val"])
    old.scale = float(np.quantile(old.val_distances, 0.95, method="inverted_cdf"))
    np.savez(run / ood.STATS_NPZ, center=level.center, components=level.components,
             mean=level.mean, precision=level.precision, scale=np.float64(old.scale),
             val_distances=old.val_distances)
    (run / ood.STATS_JSON).write_text(json.dumps({
        "format": "breastus-feature-stats", "model_sha256": ood.model_sha256(run),
        "layer": "pool", "method": ood.OLD_METHOD, "dims": int(level.components.shape[0]),
        "scale": old.scale, "train_cases": [str(i) for i in range(len(train))],
        "n_train": len(train), "val_cases": [str(i) for i in range(len(val))],
        "n_val": len(val)}))
    return old, feats["val"]


def test_older_single_level_statistics_are_recomputed_or_read_as_they_are(cls_run, tmp_path,
                                                                           caplog):
    from breastus_cli.engine.apply import ood

    run = copy_run(cls_run, tmp_path / "run")
    old, val_features = _old_kind(run)
    loaded, record = ood.load(run)
    assert loaded.layers == ["pool"] and "levels" not in record
    assert np.allclose(loaded.score(val_features), old.val_scores)
    # the dataset is there: computed again in the multi-level kind, and stored
    stats, record = ood.ensure(run)
    assert len(stats.layers) >= 3 and record["levels"] == stats.layers
    assert json.loads((run / ood.STATS_JSON).read_text())["levels"] == stats.layers
    # the dataset moved away: the older statistics are used as they are, with a warning
    moved = copy_run(cls_run, tmp_path / "moved")
    _old_kind(moved)
    config = json.loads((moved / "config.json").read_text())
    config["data"]["path"] = str(tmp_path / "gone")
    config["settings"]["data"] = str(tmp_path / "gone")
    (moved / "config.json").write_text(json.dumps(config))
    with caplog.at_level(logging.WARNING, logger="breastus"):
        stats, record = ood.ensure(moved)
    assert stats.layers == ["pool"] and "levels" not in record
    assert np.allclose(stats.val_scores, old.val_scores)
    assert "older single-level" in caplog.text


def test_train_cls_stores_the_feature_statistics_at_the_end_of_training(learn_data, tmp_path):
    from breastus_cli.engine.apply import ood
    from breastus_cli.engine.runs.rundir import read_config, run_cases

    run = tmp_path / "run"
    proc = run_cli("train-cls", learn_data, *FAST_CLS, "--epochs", "1", "--run-dir", run)
    assert proc.returncode == 0, proc.stderr
    record = json.loads((run / ood.STATS_JSON).read_text())
    assert (run / ood.STATS_NPZ).is_file()
    assert record["model_sha256"] == ood.model_sha256(run)
    assert record["levels"] == ["backbone/relu1", "backbone/relu2", "backbone/relu3",
                                "backbone/relu4", "backbone/pool4"]
    assert record["widths"] == [16, 32, 64, 128, 128]
    assert record["val_cases"] == list(run_cases(read_config(run), "val")["case_id"])
    # predict reads them: nothing computed again, the files untouched
    before = {name: (run / name).stat().st_mtime_ns for name in (ood.STATS_NPZ, ood.STATS_JSON)}
    stats, again = ood.ensure(run)
    assert again == record and np.mean(stats.val_scores <= 1) >= 0.95
    assert before == {name: (run / name).stat().st_mtime_ns
                      for name in (ood.STATS_NPZ, ood.STATS_JSON)}
