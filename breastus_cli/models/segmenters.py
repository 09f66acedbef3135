"""Lesion segmenters: ``segmentation_models.Unet`` with a pretrained-capable encoder.

Like the classifiers, the model takes one channel 0..255 and carries its encoder's
preprocessing as plain Keras layers, so the saved model needs nothing but pixels.
"""

from __future__ import annotations

from functools import partial
from pathlib import Path
from typing import Any

from breastus_cli import backend
from breastus_cli.errors import UsageError
from breastus_cli.models import efficientnet_lite
from breastus_cli.models.classifiers import preprocessing_layers

#: Encoders offered, with the preprocessing segmentation-models pairs with each.
ENCODERS: dict[str, str | None] = {
    "efficientnetb0": "torch", "efficientnetb1": "torch", "efficientnetb2": "torch",
    "efficientnetb3": "torch", "resnet18": None, "resnet34": None, "resnet50": None,
    "mobilenetv2": "tf", "vgg16": "caffe", "densenet121": "torch",
    "efficientnet-lite0": "lite", "efficientnet-lite2": "lite",
}


def _lite_encoder(architecture: str, input_shape: tuple[int, ...], *_: Any, **__: Any) -> Any:
    """segmentation-models' backbone signature over :func:`efficientnet_lite.efficientnet_lite`
    (weights are loaded afterwards, by layer name)."""
    return efficientnet_lite.efficientnet_lite(architecture, int(input_shape[0]))


def _register_lite_encoders(sm: Any) -> None:
    """Let ``sm.Unet`` build its decoder on the EfficientNet-Lite encoders' skip features."""
    factory = sm.Backbones
    for name in efficientnet_lite.VARIANTS:
        if name not in factory._models_update:
            factory._models_update[name] = [partial(_lite_encoder, name), lambda x: x]
            factory._default_feature_layers[name] = tuple(efficientnet_lite.skip_layers(name))


def check_encoder(name: str) -> None:
    if name not in ENCODERS:
        raise UsageError(f"--backbone must be one of {', '.join(ENCODERS)} (got '{name}')")


def build_unet(
    encoder: str,
    img_size: int,
    *,
    encoder_weights: Path | None = None,
    freeze_encoder: bool = False,
    bn_momentum: float | None = None,
) -> Any:
    """``input (S, S, 1) 0..255 -> preprocessing -> Unet(encoder) -> sigmoid mask``.

    ``encoder_weights`` is the encoder's Keras weights file (e.g. the cached ImageNet one),
    loaded by layer name into the U-Net's encoder.
    """
    check_encoder(encoder)
    keras, sm = backend.keras(), backend.sm()
    _register_lite_encoders(sm)
    # encoder_freeze: segmentation-models freezes the encoder except its batch-norm layers
    unet = sm.Unet(encoder, encoder_weights=None, input_shape=(img_size, img_size, 3), classes=1,
                   activation="sigmoid", encoder_freeze=freeze_encoder)
    unet._name = "unet"
    if encoder_weights is not None:
        unet.load_weights(str(encoder_weights), by_name=True)
    if bn_momentum is not None:
        for layer in unet.layers:
            if isinstance(layer, keras.layers.BatchNormalization):
                layer.momentum = bn_momentum
    inputs = keras.Input(shape=(img_size, img_size, 1), name="image")
    x = keras.layers.Concatenate(name="grey_to_rgb")([inputs, inputs, inputs])
    kind = ENCODERS[encoder]
    if kind is not None:
        for layer in preprocessing_layers(kind):
            x = layer(x)
    outputs = keras.layers.Activation("linear", dtype="float32", name="mask")(unet(x))
    return keras.Model(inputs, outputs, name=f"unet_{encoder}")
