"""A classifier's grey -> RGB replication folded into its backbone's first convolution.

The classifiers take one grey channel and copy it to three before the backbone
(:func:`breastus_cli.models.classifiers.build_classifier`). On three equal channels a
convolution with kernel ``W`` (kh, kw, 3, F) gives what a one-channel convolution with
``W.sum(axis=2)`` gives, so the copy can be folded away without changing the model.

Why an export wants it: ImageNet stems hold colour-opponent filters (e.g. red minus green)
whose three input slices nearly cancel on a grey image; fine-tuned on grey scans, their
batch norm learns a tiny variance and a gain of up to ~200 (EfficientNet-Lite0 fine-tuned on
BUS-BRA: |W| 19 against |sum W| 1.3, gain 195). int8 rounds each slice on its own, the
rounding errors no longer cancel, and the gain blows them up: the stem's int8 output was off by
8 quantization steps (rms) against 0.2-0.5 for every other layer. Summed first, the kernel is
rounded as the grey image uses it.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from breastus_cli import backend

#: the folded model must give the original's outputs within this (float32 sums in another order)
FOLD_TOLERANCE = 1e-4


def fold_grey_input(model: Any, check_images: np.ndarray) -> Any | None:
    """``model`` with one input channel all the way into its backbone's first convolution, or
    None where the model is not built that way (no ``grey_to_rgb`` copy, a preprocessing that
    differs per channel, a first layer other than a plain convolution) or where the folded
    model's outputs on ``check_images`` differ from ``model``'s by more than FOLD_TOLERANCE.
    """
    keras = backend.keras()
    names = [layer.name for layer in model.layers]
    if names[:4] != ["image", "grey_to_rgb", "preprocess", "backbone"]:
        return None
    preprocess, base = model.get_layer("preprocess"), model.get_layer("backbone")
    # per-channel-equal preprocessing only: the three channels stay equal after it
    if not isinstance(preprocess, keras.layers.Rescaling) or \
            np.ndim(preprocess.scale) or np.ndim(preprocess.offset):
        return None
    first = _first_conv(base, keras)
    if first is None:
        return None
    size = model.input_shape[1:3]
    try:
        folded_base = keras.models.clone_model(base, input_tensors=keras.Input((*size, 1)))
    except Exception:  # a backbone Keras cannot rebuild on one channel: convert it as it is
        return None
    for old, new in zip(base.layers, folded_base.layers):
        values = old.get_weights()
        if old is first:
            values = [values[0].sum(axis=2, keepdims=True), *values[1:]]
        new.set_weights(values)
    folded_base._name = "backbone"
    inputs = keras.Input((*size, 1), name="image")
    x = folded_base(preprocess(inputs))
    for layer in model.layers[4:]:  # pooling, dropout, head: one chain after the backbone
        x = layer(x)
    folded = keras.Model(inputs, x, name=model.name)
    reference = model(check_images, training=False).numpy()
    if np.abs(folded(check_images, training=False).numpy() - reference).max() > FOLD_TOLERANCE:
        return None
    return folded


def _first_conv(base: Any, keras: Any) -> Any | None:
    """The backbone's first layer if it is a plain Conv2D on the backbone's own 3-channel input
    and the only layer reading that input; else None."""
    layers = [layer for layer in base.layers
              if not isinstance(layer, keras.layers.InputLayer)]
    if not layers or not isinstance(layers[0], keras.layers.Conv2D) or \
            isinstance(layers[0], (keras.layers.DepthwiseConv2D, keras.layers.Conv2DTranspose)):
        return None
    first = layers[0]
    if first.groups != 1 or base.input_shape[-1] != 3:
        return None
    readers = [layer for layer in layers
               if any(base.input is t for t in _inputs_of(layer))]
    return first if readers == [first] else None


def _inputs_of(layer: Any) -> list[Any]:
    tensors = []
    for node in layer._inbound_nodes:
        inputs = node.input_tensors
        tensors += list(inputs) if isinstance(inputs, (list, tuple)) else [inputs]
    return tensors
