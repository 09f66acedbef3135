"""Classification metrics as serialisable Keras objects (a saved ``model.keras`` reloads by name).

Here, beside the segmentation ones (:mod:`seg_objectives`), rather than in the training code, so
that loading a run (engine/apply) registers them without importing training.
"""

from __future__ import annotations

from typing import Any

from breastus_cli import backend

keras = backend.keras()


@keras.saving.register_keras_serializable(package="breastus")
class MalignantAUC(keras.metrics.AUC):
    """ROC AUC of the malignant-class probability, from sparse labels and softmax outputs."""

    def update_state(self, y_true: Any, y_pred: Any, sample_weight: Any = None) -> Any:
        tf = backend.tf()
        y_true = tf.reshape(tf.cast(y_true, tf.float32), [-1])
        return super().update_state(y_true, y_pred[:, 1], sample_weight=None)
