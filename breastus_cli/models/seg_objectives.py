"""Segmentation losses and metrics as serialisable Keras objects.

Written here (rather than taken from ``segmentation_models.losses``) so that a saved
``model.keras`` reloads by name, and so that the metric watched during training is exactly the
one evaluate reports: the mean over images of IoU / Dice at threshold 0.5, an image whose truth
and prediction are both empty counting as 1.
"""

from __future__ import annotations

from typing import Any

from breastus_cli import backend

keras = backend.keras()
tf = backend.tf()

LOSSES = ("bce_jaccard", "bce_dice", "dice", "focal_dice")
_EPS = 1.0


def _sums(y_true: Any, y_pred: Any) -> tuple[Any, Any, Any]:
    y_true = tf.cast(y_true, y_pred.dtype)
    axes = [1, 2, 3]
    intersection = tf.reduce_sum(y_true * y_pred, axis=axes)
    return intersection, tf.reduce_sum(y_true, axis=axes), tf.reduce_sum(y_pred, axis=axes)


@keras.saving.register_keras_serializable(package="breastus")
class SegLoss(keras.losses.Loss):
    """``bce_jaccard`` (the reference study's), ``bce_dice``, ``dice`` or ``focal_dice``; soft
    Dice/Jaccard per image with smoothing 1, so empty masks do not divide by zero."""

    def __init__(self, kind: str = "bce_jaccard", name: str | None = None, **kwargs: Any) -> None:
        if kind not in LOSSES:
            raise ValueError(f"unknown segmentation loss '{kind}'")
        super().__init__(name=name or kind, **kwargs)
        self.kind = kind

    def call(self, y_true: Any, y_pred: Any) -> Any:
        y_pred = tf.cast(y_pred, tf.float32)
        y_true = tf.cast(y_true, tf.float32)
        inter, t_sum, p_sum = _sums(y_true, y_pred)
        dice = 1.0 - (2.0 * inter + _EPS) / (t_sum + p_sum + _EPS)
        jaccard = 1.0 - (inter + _EPS) / (t_sum + p_sum - inter + _EPS)
        clipped = tf.clip_by_value(y_pred, 1e-7, 1.0 - 1e-7)
        bce_map = -(y_true * tf.math.log(clipped) + (1.0 - y_true) * tf.math.log(1.0 - clipped))
        bce = tf.reduce_mean(bce_map, axis=[1, 2, 3])
        if self.kind == "bce_jaccard":
            return bce + jaccard
        if self.kind == "bce_dice":
            return bce + dice
        if self.kind == "dice":
            return dice
        p_t = y_true * clipped + (1.0 - y_true) * (1.0 - clipped)
        alpha = y_true * 0.25 + (1.0 - y_true) * 0.75
        focal = tf.reduce_mean(alpha * tf.pow(1.0 - p_t, 2.0) * bce_map, axis=[1, 2, 3])
        return focal + dice

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "kind": self.kind}


@keras.saving.register_keras_serializable(package="breastus")
class MeanOverlap(keras.metrics.Metric):
    """Mean over images of IoU (``dice=False``) or Dice at ``threshold``."""

    def __init__(self, threshold: float = 0.5, dice: bool = False, name: str | None = None,
                 **kwargs: Any) -> None:
        super().__init__(name=name or ("dice" if dice else "iou"), **kwargs)
        self.threshold, self.dice = threshold, dice
        self.total = self.add_weight(name="total", initializer="zeros")
        self.count = self.add_weight(name="count", initializer="zeros")

    def update_state(self, y_true: Any, y_pred: Any, sample_weight: Any = None) -> None:
        pred = tf.cast(tf.cast(y_pred, tf.float32) >= self.threshold, tf.float32)
        truth = tf.cast(tf.cast(y_true, tf.float32) >= 0.5, tf.float32)
        inter, t_sum, p_sum = _sums(truth, pred)
        denominator = (t_sum + p_sum) if self.dice else (t_sum + p_sum - inter)
        numerator = 2.0 * inter if self.dice else inter
        score = tf.where(denominator > 0, numerator / tf.maximum(denominator, 1e-9), 1.0)
        self.total.assign_add(tf.reduce_sum(score))
        self.count.assign_add(tf.cast(tf.shape(score)[0], tf.float32))

    def result(self) -> Any:
        return tf.math.divide_no_nan(self.total, self.count)

    def reset_state(self) -> None:
        self.total.assign(0.0)
        self.count.assign(0.0)

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "threshold": self.threshold, "dice": self.dice}
