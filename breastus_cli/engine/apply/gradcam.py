"""Grad-CAM for the classifiers: where in the image the malignant score comes from.

The classifier is a chain ``image -> grey_to_rgb -> preprocess -> backbone -> pool -> head``;
the chain is replayed under a gradient tape, watching the backbone's last feature map
(Selvaraju et al., ICCV 2017: channel weights = spatially averaged gradients of the score).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from breastus_cli import backend
from breastus_cli.errors import UsageError


def gradcam(model: Any, images: np.ndarray, class_index: int = 1) -> np.ndarray:
    """Heat maps in [0, 1], one per image, at the backbone's feature resolution."""
    tf, keras = backend.tf(), backend.keras()
    names = [layer.name for layer in model.layers]
    if "backbone" not in names:
        raise UsageError("--explain needs a breastus classifier (a model with a 'backbone' layer)")
    x_in = tf.convert_to_tensor(images, dtype=tf.float32)
    with tf.GradientTape() as tape:
        x = x_in
        features = None
        for layer in model.layers:
            if isinstance(layer, keras.layers.InputLayer):
                continue
            if isinstance(layer, keras.layers.Concatenate):
                x = layer([x, x, x])
            elif layer.name == "backbone":
                features = layer(x, training=False)
                tape.watch(features)
                x = features
            else:
                x = layer(x, training=False)
        score = x[:, class_index]
    grads = tape.gradient(score, features)
    weights = tf.reduce_mean(grads, axis=(1, 2), keepdims=True)
    cam = tf.nn.relu(tf.reduce_sum(weights * features, axis=-1)).numpy()
    peak = cam.reshape(len(cam), -1).max(axis=1).reshape(-1, 1, 1)
    return np.where(peak > 0, cam / np.maximum(peak, 1e-12), 0.0).astype(np.float32)
