"""Training throughput (images/s) of one classifier epoch fed three ways, on the same files.

    tf.data   breastus_cli.data.pipeline.make_dataset (decode once, cache, shuffle, augment)
    in-memory the same images decoded once (load_arrays) -> from_tensor_slices (the baseline)
    IDG       tf_keras ImageDataGenerator.flow_from_directory on DATA/cls/<label>/

each without augmentation (pure input cost) and with it (the project's Augment; for the
in-memory baseline the same Augment map runs on the in-memory tensors; for IDG its
horizontal_flip / rotation / zoom / shift / brightness). One MobileNetV2 classifier
(build_classifier, random weights, compiled like ClassificationTask.compile) is trained
with model.fit(..., epochs=1) per timed epoch, batch 16, every image once per epoch.

The first epoch of each pipeline is reported on its own (tf.data decodes and fills its cache
then); the steady rate is the median of the following epochs. Epochs are interleaved
round-robin across the pipelines (order rotated each round) so that load from other work on a
shared machine hits them alike; the train function is traced once before any timing.

Run: .venv/bin/python benchmarks/input_pipeline.py [--img-size 224] [--epochs 3] [--data DIR]
     [--quick]
Writes the result between the INPUT_PIPELINE markers of BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import (EPOCH_TIME_NOTE, EpochTimer, add_load_options, command_line,  # noqa: E402
                     describe_pngs, in_memory_dataset, prepare_data)
from _record import record  # noqa: E402

SECTION = "INPUT_PIPELINE"


def _files(data: Path) -> tuple[list[str], np.ndarray, list[str]]:
    """Image paths and class indices under DATA/cls, in flow_from_directory's class order."""
    root = data / "cls"
    classes = sorted(p.name for p in root.iterdir() if p.is_dir())
    paths, labels = [], []
    for index, name in enumerate(classes):
        for path in sorted((root / name).glob("*.png")):
            paths.append(str(path))
            labels.append(index)
    return paths, np.asarray(labels, np.int32), classes


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--img-size", type=int, default=224)
    parser.add_argument("--epochs", type=int, default=3,
                        help="timed epochs after the first, per pipeline (default 3)")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--data", type=Path, default=None,
                        help="a prepared dataset (breastus prepare output) to reuse")
    parser.add_argument("--quick", action="store_true", help="image size 128, 2 epochs")
    add_load_options(parser)
    parser.add_argument("--no-record", action="store_true",
                        help="print the table only; leave BENCHMARKS.md alone")
    args = parser.parse_args()
    if args.quick:
        args.img_size, args.epochs = 128, 2
    command = command_line("input_pipeline.py")

    from breastus_cli import backend

    backend.configure()
    with tempfile.TemporaryDirectory(prefix="bench-input-") as tmp:
        data, source = prepare_data(Path(tmp), args.data)
        paths, labels, classes = _files(data)
        body = "\n".join(_run(args, paths, labels, classes, data))
    body = body.replace("{SOURCE}", source).replace("{COMMAND}", command)
    print(body)
    if not args.no_record:
        record(SECTION, body)


def _run(args: argparse.Namespace, paths: list[str], labels: np.ndarray, classes: list[str],
         data: Path) -> list[str]:
    from breastus_cli import backend
    from breastus_cli.data.pipeline import Augment, load_arrays, make_dataset
    from breastus_cli.engine.runs.settings import ClsSettings
    from breastus_cli.engine.training.tasks import ClassificationTask
    from breastus_cli.models.classifiers import build_classifier

    tf = backend.tf()
    keras = backend.keras()
    from tf_keras.preprocessing.image import ImageDataGenerator

    size, batch, n = args.img_size, args.batch_size, len(paths)
    described = describe_pngs(paths, "images")
    augment = Augment()

    started = time.perf_counter()
    x_uint8 = load_arrays(paths, size)
    load_s = time.perf_counter() - started
    x_float = x_uint8.astype(np.float32)
    print(f"load_arrays: {n} images decoded in {load_s:.2f} s", flush=True)

    # --- the three pipelines, each without and with augmentation -------------------------
    def in_memory(aug: bool):
        return in_memory_dataset((x_float, labels), (x_uint8, labels), batch,
                                 augment if aug else None)

    def tfdata(aug: bool):
        return make_dataset(paths, size, batch, labels=labels, shuffle=True,
                            augment=augment if aug else None, seed=0, cache=True)

    def idg(aug: bool):
        options = {}
        if aug:
            options = dict(horizontal_flip=True, rotation_range=augment.rotation_deg,
                           zoom_range=augment.zoom, width_shift_range=augment.shift,
                           height_shift_range=augment.shift,
                           brightness_range=(1 - augment.brightness, 1 + augment.brightness),
                           fill_mode="constant", cval=0.0)
        return ImageDataGenerator(**options).flow_from_directory(
            str(data / "cls"), target_size=(size, size), color_mode="grayscale",
            classes=classes, class_mode="sparse", batch_size=batch, shuffle=True, seed=0,
            interpolation="bilinear")

    configs = [("in-memory tensors (baseline)", False, in_memory),
               ("tf.data `make_dataset`", False, tfdata),
               ("`ImageDataGenerator.flow_from_directory`", False, idg),
               ("in-memory tensors (baseline)", True, in_memory),
               ("tf.data `make_dataset`", True, tfdata),
               ("`ImageDataGenerator.flow_from_directory`", True, idg)]

    # --- one model; trace its train function before any timing --------------------------
    keras.utils.set_random_seed(0)
    model = build_classifier("mobilenetv2", size, backbone_weights=None)
    ClassificationTask().compile(model, ClsSettings(img_size=size, batch_size=batch))
    warm_n = batch + max(1, n % batch or batch // 2)  # a full batch and a partial one
    warm = tf.data.Dataset.from_tensor_slices((x_float[:warm_n], labels[:warm_n])).batch(batch)
    model.fit(warm, epochs=1, verbose=0)
    # ImageDataGenerator reaches fit through Keras's generator adapter, whose input signature
    # (float32 labels, its own shapes) traces the train function again: do that here too.
    model.fit(idg(False), steps_per_epoch=2, epochs=1, verbose=0)
    traces = model.train_function.experimental_get_tracing_count()

    # first epochs (tf.data decodes and fills its cache), then timed rounds, order rotated
    timer = EpochTimer(model, configs, args, width=42)
    first, steady = timer.rounds(args.epochs)

    retraced = model.train_function.experimental_get_tracing_count() - traces
    first_s = [f[0] for f in first]
    steady_s = [[t[0] for t in row] for row in steady]
    teardown = [statistics.mean(row) for row in timer.teardowns]
    rate = [n / statistics.median(s) for s in steady_s]
    base = {aug: rate[i] for i, (_, aug, f) in enumerate(configs) if f is in_memory}
    rows = ["| pipeline | augmentation | first epoch images/s | steady images/s | "
            "x in-memory | fit teardown wait, mean s |", "|---|---|---:|---:|---:|---:|"]
    for i, (name, aug, factory) in enumerate(configs):
        aug_name = ("none" if not aug else
                    "ImageDataGenerator flip/rotate/zoom/shift/brightness" if factory is idg
                    else "project `Augment()`")
        rows.append(f"| {name} | {aug_name} | {n / first_s[i]:.1f} | {rate[i]:.1f} | "
                    f"{rate[i] / base[aug]:.2f} | {teardown[i]:.2f} |")
    aug_cost = 1 - base[True] / base[False]
    spread = timer.spread(steady_s)
    lines = rows + [
        "",
        f"- Data: {{SOURCE}}: {described}. Image size {size}, batch {batch}, all {n} images "
        f"once per epoch.",
        f"- Model: `build_classifier(\"mobilenetv2\", {size}, backbone_weights=None)`, compiled "
        f"by `ClassificationTask.compile` (Adam + SparseCategoricalCrossentropy), trained with "
        f"one `model.fit(epochs=1, verbose=0)` per epoch; its train function is traced before "
        f"any timing (traces during the timed epochs: {retraced}). "
        f"TensorFlow {tf.__version__}, CPU only.",
        EPOCH_TIME_NOTE,
        f"- First epoch: a fresh dataset (tf.data decodes every PNG and fills its cache). "
        f"Steady: median of {args.epochs} epochs after it, interleaved round-robin across the "
        f"six rows, order rotated each round (min-max seconds: {spread}).",
        f"- \"x in-memory\" divides by the in-memory row of the same augmentation setting; "
        f"with augmentation that baseline runs the project's `Augment` map on the in-memory "
        f"tensors. Decoding the images once for it (`load_arrays`) took {load_s:.1f} s, outside "
        f"its epochs. The project's augmentation costs {aug_cost:.0%} of the in-memory rate "
        f"({base[True]:.1f} vs {base[False]:.1f} images/s).",
        f"- ImageDataGenerator: `flow_from_directory(DATA/cls, color_mode=\"grayscale\", "
        f"class_mode=\"sparse\", interpolation=\"bilinear\")`, `fit`'s default workers=1; "
        f"with augmentation horizontal_flip, rotation_range={augment.rotation_deg:g}, "
        f"zoom_range={augment.zoom:g}, width/height_shift_range={augment.shift:g}, "
        f"brightness_range=({1 - augment.brightness:g}, {1 + augment.brightness:g}) (it has no "
        f"contrast jitter).",
        timer.load_note(),
        "",
        "Command: `{COMMAND}`.",
    ]
    return lines


if __name__ == "__main__":
    main()
