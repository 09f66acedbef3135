"""tf.data input pipelines: decode and resize each image once, cache, augment, batch, prefetch.

    paths -> parallel map(decode PNG, resize, uint8) -> cache -> shuffle -> augment -> batch -> prefetch

Decoded, resized images are cached as uint8 (a 224x224 BrEaST split is ~13 MB), so from the
second epoch on the pipeline only shuffles, augments and batches tensors already in memory.
Augmentation is ultrasound-safe: horizontal flips (never vertical: depth has a direction,
posterior shadowing lies below a lesion), small rotations, zoom and shifts, brightness and
contrast. Geometric transforms are applied identically to an image and its mask.
Random draws are stateless, seeded per element from a seeded stream, so a run is reproducible.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from breastus_cli import backend


@dataclass(frozen=True)
class Augment:
    """Strength of each augmentation; ``scaled(s)`` multiplies them all (0 turns them off)."""

    hflip: bool = True
    rotation_deg: float = 10.0
    zoom: float = 0.10
    shift: float = 0.05
    brightness: float = 0.10  # fraction of the 0..255 range
    contrast: float = 0.20

    def scaled(self, strength: float) -> Augment:
        return Augment(self.hflip and strength > 0, self.rotation_deg * strength,
                       self.zoom * strength, self.shift * strength,
                       self.brightness * strength, self.contrast * strength)


def _decode(path: Any, img_size: int, tf: Any, *, mask: bool = False) -> Any:
    if not mask:  # images: the one resize that evaluate and predict use too (imaging.resize_grey)
        from breastus_cli.data.imaging import read_resized

        image = tf.numpy_function(lambda p: read_resized(p.decode(), img_size), [path], tf.uint8,
                                  stateful=False)
        image.set_shape([img_size, img_size, 1])
        return image
    raw = tf.io.read_file(path)
    image = tf.io.decode_png(raw, channels=1)  # prepared datasets store 8-bit PNGs
    image = tf.image.resize(tf.cast(image, tf.float32), [img_size, img_size], method="bilinear",
                            antialias=False)
    return tf.cast(image >= 127.5, tf.uint8)


def _affine(images: Any, seed: Any, augment: Augment, tf: Any) -> Any:
    """Projective transform matrices (rotation, zoom, shift) for one square image."""
    size = tf.cast(tf.shape(images)[0], tf.float32)
    values = tf.random.stateless_uniform([4], seed=seed, minval=-1.0, maxval=1.0)
    angle = values[0] * augment.rotation_deg * math.pi / 180.0
    scale = 1.0 + values[1] * augment.zoom
    dx, dy = values[2] * augment.shift * size, values[3] * augment.shift * size
    cos, sin = tf.cos(angle) / scale, tf.sin(angle) / scale
    centre = (size - 1.0) / 2.0
    # output (x, y) -> input (a0 x + a1 y + a2, b0 x + b1 y + b2): rotate/zoom about the centre
    a2 = centre - cos * centre + sin * centre - dx
    b2 = centre - sin * centre - cos * centre - dy
    return tf.stack([cos, -sin, a2, sin, cos, b2, 0.0, 0.0])[tf.newaxis, :]


def _transform(image: Any, matrix: Any, interpolation: str, tf: Any) -> Any:
    return tf.raw_ops.ImageProjectiveTransformV3(
        images=image[tf.newaxis], transforms=matrix, output_shape=tf.shape(image)[:2],
        fill_value=0.0, interpolation=interpolation, fill_mode="CONSTANT")[0]


def augment_fn(augment: Augment, tf: Any):
    """A map function (image, target, seed) -> (image, target) for image or mask targets."""

    def apply(image: Any, target: Any, seed: Any) -> tuple[Any, Any]:
        seeds = tf.random.experimental.stateless_split(seed, num=4)
        image = tf.cast(image, tf.float32)
        is_mask = len(target.shape) == 3
        if augment.hflip:
            flip = tf.random.stateless_uniform([], seed=seeds[0]) < 0.5
            image = tf.cond(flip, lambda: tf.reverse(image, axis=[1]), lambda: image)
            if is_mask:
                target = tf.cond(flip, lambda: tf.reverse(target, axis=[1]), lambda: target)
        if augment.rotation_deg or augment.zoom or augment.shift:
            matrix = _affine(image, seeds[1], augment, tf)
            image = _transform(image, matrix, "BILINEAR", tf)
            if is_mask:
                target = _transform(tf.cast(target, tf.float32), matrix, "NEAREST", tf)
        if augment.brightness or augment.contrast:
            draws = tf.random.stateless_uniform([2], seed=seeds[2], minval=-1.0, maxval=1.0)
            mean = tf.reduce_mean(image)
            image = (image - mean) * (1.0 + draws[0] * augment.contrast) + mean
            image = image + draws[1] * augment.brightness * 255.0
            image = tf.clip_by_value(image, 0.0, 255.0)
        if is_mask:
            target = tf.cast(target, tf.float32)
        return image, target

    return apply


def make_dataset(
    images: list[str | Path],
    img_size: int,
    batch_size: int,
    *,
    labels: np.ndarray | None = None,
    masks: list[str | Path] | None = None,
    shuffle: bool = False,
    augment: Augment | None = None,
    seed: int = 0,
    cache: bool | str = True,
    drop_remainder: bool = False,
) -> Any:
    """Build the tf.data pipeline of ``(image float32 (S,S,1) 0..255, target)`` batches.

    ``target`` is the class index (``labels``) or the float32 (S,S,1) 0/1 mask (``masks``);
    with neither, it is a dummy 0 (prediction). ``cache`` may be a file path for datasets that
    do not fit in memory.
    """
    tf = backend.tf()
    autotune = tf.data.AUTOTUNE
    paths = tf.constant([str(p) for p in images])
    if masks is not None:
        targets: Any = tf.constant([str(p) for p in masks])
    elif labels is not None:
        targets = tf.constant(np.asarray(labels, dtype=np.int32))
    else:
        targets = tf.zeros([len(images)], dtype=tf.int32)
    dataset = tf.data.Dataset.from_tensor_slices((paths, targets))

    def load(path: Any, target: Any) -> tuple[Any, Any]:
        image = _decode(path, img_size, tf)
        if masks is not None:
            target = _decode(target, img_size, tf, mask=True)
        return image, target

    dataset = dataset.map(load, num_parallel_calls=autotune, deterministic=True)
    if cache:
        dataset = dataset.cache("" if cache is True else str(cache))
    if shuffle:
        dataset = dataset.shuffle(len(images), seed=seed, reshuffle_each_iteration=True)
    if augment is not None:
        seeds = tf.data.Dataset.random(seed=seed, rerandomize_each_iteration=True).batch(2)
        dataset = tf.data.Dataset.zip((dataset, seeds)).map(
            lambda pair, s: augment_fn(augment, tf)(pair[0], pair[1], s),
            num_parallel_calls=autotune, deterministic=True)
    else:
        dataset = dataset.map(_to_float(tf, masks is not None), num_parallel_calls=autotune,
                              deterministic=True)
    # With tf.data autotuning on, tf-keras `fit` waits at the end of every epoch until the
    # autotune thread wakes to release the iterator (5-20 s per epoch measured on 2 cores);
    # without it AUTOTUNE parallelism falls back to the core count and decoding is as fast.
    options = tf.data.Options()
    options.autotune.enabled = False
    return (dataset.batch(batch_size, drop_remainder=drop_remainder).prefetch(autotune)
            .with_options(options))


def _to_float(tf: Any, is_mask: bool):
    def convert(image: Any, target: Any) -> tuple[Any, Any]:
        image = tf.cast(image, tf.float32)
        if is_mask:
            target = tf.cast(target, tf.float32)
        return image, target

    return convert


def load_arrays(images: list[str | Path], img_size: int) -> np.ndarray:
    """Decode and resize images to a (N, S, S, 1) uint8 array with the pipeline's own ops
    (for in-memory baselines and small evaluations)."""
    dataset = make_dataset(images, img_size, batch_size=64, cache=False)
    return np.concatenate([batch[0].numpy() for batch in dataset], axis=0).astype(np.uint8) \
        if images else np.zeros((0, img_size, img_size, 1), np.uint8)
