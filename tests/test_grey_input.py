"""The grey -> RGB copy folded into the backbone's first convolution before TFLite conversion
(breastus_cli/models/grey_input.py): the same model in float, and an int8 export that keeps a
colour-opponent stem with a huge batch-norm gain (what fine-tuned ImageNet stems learn on grey
scans) in agreement where converting the three-channel graph, as export did before, did not."""

from __future__ import annotations

import numpy as np
import pytest

SIZE = 32


def _opponent_stem_classifier():
    """A smallcnn classifier whose first convolution's 3 input slices nearly cancel on a grey
    image (A, -A + 1e-3 B, 0), its batch norm blowing that small response up (gain ~300)."""
    from breastus_cli import backend
    from breastus_cli.engine.export.export import synthetic_images
    from breastus_cli.models.classifiers import build_classifier

    keras = backend.keras()
    keras.utils.set_random_seed(3)
    model = build_classifier("smallcnn", SIZE, backbone_weights=None, dropout=0.0)
    base = model.get_layer("backbone")
    conv, bn = base.get_layer("conv1"), base.get_layer("bn1")
    rng = np.random.default_rng(0)
    a = rng.normal(0, 1, (3, 3, 1, 16)).astype(np.float32)
    b = rng.normal(0, 1, (3, 3, 1, 16)).astype(np.float32)
    conv.set_weights([np.concatenate([a, -a + 1e-3 * b, np.zeros_like(a)], axis=2)])
    images = synthetic_images(64, SIZE, seed=1)
    # every batch norm's statistics from the images, as training leaves them; conv1's (its
    # tiny response on grey images) with a large gamma: a gain of ~300
    x = model.get_layer("preprocess")(np.repeat(images, 3, axis=-1))
    for layer in base.layers:
        if isinstance(layer, keras.layers.BatchNormalization):
            mean, var = x.numpy().mean(axis=(0, 1, 2)), x.numpy().var(axis=(0, 1, 2))
            ones = np.ones_like(mean)
            layer.set_weights([ones * (10.0 if layer is bn else 1.0), 0 * ones, mean, var])
        x = layer(x, training=False)
    gamma, _, _, var = bn.get_weights()
    assert (gamma / np.sqrt(var + bn.epsilon)).min() > 100
    return model, images


def test_folded_graph_gives_the_same_outputs_with_one_input_channel():
    from breastus_cli.models.grey_input import FOLD_TOLERANCE, fold_grey_input

    model, images = _opponent_stem_classifier()
    folded = fold_grey_input(model, images[:4])
    assert folded is not None
    assert folded.get_layer("backbone").get_layer("conv1").get_weights()[0].shape == (3, 3, 1, 16)
    diff = np.abs(folded(images, training=False).numpy() - model(images, training=False).numpy())
    assert diff.max() <= FOLD_TOLERANCE


def test_a_model_not_built_as_grey_copy_then_backbone_is_left_alone():
    from breastus_cli import backend
    from breastus_cli.models.classifiers import build_classifier
    from breastus_cli.models.grey_input import fold_grey_input

    keras = backend.keras()
    inputs = keras.Input((SIZE, SIZE, 1), name="image")
    plain = keras.Model(inputs, keras.layers.Dense(2)(keras.layers.Flatten()(inputs)))
    images = np.zeros((2, SIZE, SIZE, 1), np.float32)
    assert fold_grey_input(plain, images) is None
    # caffe preprocessing subtracts a different mean per channel: the copies are not equal
    resnet = build_classifier("resnet50", SIZE, backbone_weights=None)
    assert fold_grey_input(resnet, images) is None


def test_int8_export_of_an_opponent_stem_agrees_only_once_folded(tmp_path):
    from breastus_cli.engine.export.agreement import measure_agreement
    from breastus_cli.engine.export.convert import convert_tflite
    from breastus_cli.engine.export.export import _tflite_graph, synthetic_images
    from breastus_cli.engine.apply.tflite_model import TFLiteModel

    model, calibration = _opponent_stem_classifier()
    test = synthetic_images(96, SIZE, seed=7)
    reference = model(test, training=False).numpy()
    threshold = float(np.median(reference[:, 1]))  # half the images on each side

    def representative():
        for image in calibration:
            yield [image[np.newaxis]]

    def agreement(graph, path) -> float:
        content, _ = convert_tflite(graph, SIZE, "int8", representative)
        path.write_bytes(content)
        outputs = TFLiteModel(path).predict(test)
        return measure_agreement(reference, outputs, "cls", threshold, "tflite",
                                 "int8")["label_agreement"]

    before = agreement(model, tmp_path / "three-channels.tflite")  # what export converted
    graph = _tflite_graph(model, "cls", test)
    assert graph is not model
    after = agreement(graph, tmp_path / "folded.tflite")
    assert before < 0.9, before
    assert after >= 0.98, (before, after)


@pytest.mark.parametrize("task", ["seg"])
def test_segmenters_are_converted_as_they_are(task):
    from breastus_cli.engine.export.export import _tflite_graph

    sentinel = object()
    assert _tflite_graph(sentinel, task, np.zeros((1, SIZE, SIZE, 1), np.float32)) is sentinel
