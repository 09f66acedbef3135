"""The head and the backbone of a classifier trained apart: a head warm-up, and a learning rate
of the backbone's own (``train-cls --head-warmup E --backbone-lr-scale S``).

Two Adam optimizers in one ``fit``: the compiled one moves the head (and any other layer outside
the backbone) at ``--lr``; the backbone's moves the backbone at ``S x`` the head's current rate,
which is 0 for the first ``E`` epochs. Both are part of the model, so BackupAndRestore saves and
restores them with it: a resumed run goes on with the same moments and the same schedule (the
rate is set from the epoch number at each epoch's start). During the warm-up the backbone's Adam
still sees every gradient (its moments are ready when it starts), but a rate of 0 changes no
weight. Its batch norms still run on batch statistics and update their moving ones, as they do
once the backbone trains (``--freeze-bn`` keeps them as pretrained).
"""

from __future__ import annotations

from typing import Any

from breastus_cli import backend
from breastus_cli.engine.runs.settings import ClsSettings

def wrap(model: Any, settings: ClsSettings, backbone: str) -> Any:
    """``model``'s layers as a model that trains its nested model ``backbone`` (the task's
    ``transfer_layer``) with an optimizer of its own (call inside the distribution strategy's
    scope, before compiling)."""
    keras, tf = backend.keras(), backend.tf()

    class LayerwiseModel(keras.Model):  # type: ignore[misc, name-defined]
        """A functional model whose ``train_step`` applies two optimizers."""

        def train_step(self, data: Any) -> Any:
            x, y, sample_weight = keras.utils.unpack_x_y_sample_weight(data)
            with tf.GradientTape() as tape:
                y_pred = self(x, training=True)
                loss = self.compute_loss(x, y, y_pred, sample_weight)
            body_ids = {id(v) for v in self.get_layer(backbone).trainable_variables}
            body = [v for v in self.trainable_variables if id(v) in body_ids]
            head = [v for v in self.trainable_variables if id(v) not in body_ids]
            grads = tape.gradient(loss, head + body)
            self.optimizer.apply_gradients(zip(grads[:len(head)], head))
            self.backbone_optimizer.apply_gradients(zip(grads[len(head):], body))
            return self.compute_metrics(x, y, y_pred, sample_weight)

    wrapped = LayerwiseModel(inputs=model.inputs, outputs=model.outputs, name=model.name)
    # tracked as an attribute: BackupAndRestore's checkpoint holds its moments and step count
    wrapped.backbone_optimizer = keras.optimizers.Adam(
        learning_rate=0.0 if settings.head_warmup else settings.lr * settings.backbone_lr_scale)
    wrapped.backbone_optimizer.build(wrapped.get_layer(backbone).trainable_variables)
    return wrapped


def backbone_rate(epoch: int, head_rate: float, settings: ClsSettings) -> float:
    """The backbone's learning rate in 0-based ``epoch``, given the head's.

    >>> s = ClsSettings(data="d", weights="imagenet", epochs=5, head_warmup=2,
    ...                 backbone_lr_scale=0.5)
    >>> [backbone_rate(e, 1.0, s) for e in range(4)]
    [0.0, 0.0, 0.5, 0.5]
    """
    return 0.0 if epoch < settings.head_warmup else head_rate * settings.backbone_lr_scale


def callback(settings: ClsSettings) -> Any:
    """Sets the backbone's rate at each epoch's start, after any LearningRateScheduler has set
    the head's (put it after that callback)."""
    keras = backend.keras()

    class BackboneRate(keras.callbacks.Callback):  # type: ignore[misc, name-defined]
        def on_epoch_begin(self, epoch: int, logs: Any = None) -> None:
            head = float(keras.backend.get_value(self.model.optimizer.learning_rate))
            self.model.backbone_optimizer.learning_rate.assign(
                backbone_rate(epoch, head, settings))

    return BackboneRate()
