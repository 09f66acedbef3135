"""Segmenter training throughput (images/s): the tf.data pipeline against in-memory tensors.

    tf.data   breastus_cli.data.pipeline.make_dataset(images, S, 8, masks=..., shuffle=True,
              augment=Augment() or None, cache=True): decode image and mask once, cache,
              shuffle, augment both alike, batch, prefetch
    in-memory the same images and masks decoded once with the pipeline's own ops (one pass of
              make_dataset(cache=False), stacked) -> from_tensor_slices -> shuffle -> batch
              (with augmentation, the same Augment map runs on the in-memory tensors)

One U-Net with an EfficientNetB2 encoder (build_unet("efficientnetb2", S), random weights,
compiled by SegmentationTask.compile: Adam, bce_jaccard loss, IoU and Dice metrics) is trained
with model.fit(..., epochs=1) per timed epoch, batch 8, every case with a mask once per epoch.
The first epoch of each pipeline is reported on its own (tf.data decodes and fills its cache
then); the steady rate is the median of the following epochs. Epochs are interleaved
round-robin across the pipelines (order rotated each round) so that load from other work hits
them alike; the train function is traced before any timing.

Data: the real BrEaST-Lesions_USG dataset when /work/shared/data/BrEaST-Lesions_USG exists
(prepared into a temporary folder), else a synthetic one of the same size.

Run: .venv/bin/python benchmarks/seg_pipeline.py [--img-size 128] [--epochs 2] [--data DIR]
     [--quick]
Writes the result between the SEG_PIPELINE markers of BENCHMARKS.md.
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

SECTION = "SEG_PIPELINE"


def _files(data: Path) -> tuple[list[str], list[str]]:
    """Image and mask paths of every case with a lesion mask (what train-seg uses)."""
    from breastus_cli.data.manifest import read_manifest

    frame = read_manifest(data)
    frame = frame[frame["mask"] != ""]
    return ([str(data / p) for p in frame["image"]], [str(data / p) for p in frame["mask"]])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--img-size", type=int, default=128)
    parser.add_argument("--epochs", type=int, default=2,
                        help="timed epochs after the first, per pipeline (default 2)")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--data", type=Path, default=None,
                        help="a prepared dataset (breastus prepare output) to reuse")
    parser.add_argument("--limit", type=int, default=0,
                        help="use only the first LIMIT cases (0: all)")
    parser.add_argument("--quick", action="store_true",
                        help="smoke test: image size 64, 32 cases, 1 steady epoch, no waiting")
    add_load_options(parser)
    parser.add_argument("--note", default="", help="a line added under the table")
    parser.add_argument("--no-record", action="store_true",
                        help="print the table only; leave BENCHMARKS.md alone")
    args = parser.parse_args()
    if args.quick:
        args.img_size, args.epochs, args.limit, args.retries = 64, 1, args.limit or 32, 0
        args.max_wait = 0.0
    command = command_line("seg_pipeline.py")

    from breastus_cli import backend

    backend.configure()
    with tempfile.TemporaryDirectory(prefix="bench-seg-") as tmp:
        data, source = prepare_data(Path(tmp), args.data, cases=40 if args.quick else 252)
        paths, masks = _files(data)
        if args.limit:
            paths, masks = paths[:args.limit], masks[:args.limit]
        body = "\n".join(_run(args, paths, masks))
    body = body.replace("{SOURCE}", source).replace("{COMMAND}", command)
    print(body)
    if not args.no_record:
        record(SECTION, body)


def _run(args: argparse.Namespace, paths: list[str], masks: list[str]) -> list[str]:
    from breastus_cli import backend
    from breastus_cli.data.pipeline import Augment, make_dataset
    from breastus_cli.engine.runs.settings import SegSettings
    from breastus_cli.engine.training.tasks import SegmentationTask
    from breastus_cli.models.segmenters import build_unet

    tf = backend.tf()
    keras = backend.keras()
    size, batch, n = args.img_size, args.batch_size, len(paths)
    described = describe_pngs(paths, "cases with a lesion mask", masks)
    augment = Augment()

    # decoded once with the pipeline's own ops (its decode + resize, no cache), then stacked
    started = time.perf_counter()
    pairs = list(make_dataset(paths, size, 64, masks=masks, cache=False))
    x_float = np.concatenate([p[0].numpy() for p in pairs]).astype(np.float32)
    y_float = np.concatenate([p[1].numpy() for p in pairs]).astype(np.float32)
    load_s = time.perf_counter() - started
    x_uint8, y_uint8 = x_float.astype(np.uint8), y_float.astype(np.uint8)
    print(f"decoded {n} images and masks once in {load_s:.2f} s "
          f"({(x_float.nbytes + y_float.nbytes) / 1e6:.0f} MB as float32)", flush=True)

    def in_memory(aug: bool):
        return in_memory_dataset((x_float, y_float), (x_uint8, y_uint8), batch,
                                 augment if aug else None)

    def tfdata(aug: bool):
        return make_dataset(paths, size, batch, masks=masks, shuffle=True,
                            augment=augment if aug else None, seed=0, cache=True)

    configs = [("in-memory tensors (baseline)", False, in_memory),
               ("tf.data `make_dataset`", False, tfdata),
               ("in-memory tensors (baseline)", True, in_memory),
               ("tf.data `make_dataset`", True, tfdata)]

    # one model; trace its train function (a full batch and a partial one) before any timing
    keras.utils.set_random_seed(0)
    settings = SegSettings(img_size=size, batch_size=batch)
    model = build_unet("efficientnetb2", size)
    SegmentationTask().compile(model, settings)
    warm_n = min(n, batch + max(1, n % batch or batch // 2))
    model.fit(tf.data.Dataset.from_tensor_slices((x_float[:warm_n], y_float[:warm_n]))
              .batch(batch), epochs=1, verbose=0)

    timer = EpochTimer(model, configs, args, width=30)
    first_runs, steady_runs = timer.rounds(args.epochs)
    first = [wall for wall, _ in first_runs]
    steady = [[wall for wall, _ in row] for row in steady_runs]

    rate = [n / statistics.median(s) for s in steady]
    base = {aug: rate[i] for i, (_, aug, f) in enumerate(configs) if f is in_memory}
    base_first = {aug: n / first[i] for i, (_, aug, f) in enumerate(configs) if f is in_memory}
    rows = ["| pipeline | augmentation | first epoch images/s | steady images/s | "
            "first epoch x in-memory | steady x in-memory | fit teardown wait, mean s |",
            "|---|---|---:|---:|---:|---:|---:|"]
    for i, (name, aug, _) in enumerate(configs):
        rows.append(f"| {name} | {'project `Augment()`' if aug else 'none'} | "
                    f"{n / first[i]:.1f} | {rate[i]:.1f} | {n / first[i] / base_first[aug]:.2f} | "
                    f"{rate[i] / base[aug]:.2f} | {statistics.mean(timer.teardowns[i]):.2f} |")
    spread = timer.spread(steady)
    aug_cost = 1 - base[True] / base[False]
    lines = rows + [
        "",
        f"- Data: {{SOURCE}}: {described}. Image size {size}, batch {batch}, all {n} cases "
        "once per epoch.",
        f"- Model: `build_unet(\"efficientnetb2\", {size})` (random weights, "
        f"{model.count_params() / 1e6:.1f} M parameters), compiled by "
        "`SegmentationTask.compile` (Adam, `SegLoss(\"bce_jaccard\")`, IoU and Dice), one "
        "`model.fit(epochs=1, verbose=0)` per epoch; its train function is traced before any "
        f"timing. TensorFlow {tf.__version__}, CPU only.",
        EPOCH_TIME_NOTE,
        "- First epoch: a fresh dataset (tf.data decodes every image and mask PNG and fills its "
        f"cache; the in-memory row's first epoch is just its first). Steady: median of "
        f"{args.epochs} epochs after it, interleaved round-robin across the four rows, order "
        f"rotated each round (min-max seconds: {spread}).",
        "- \"x in-memory\" divides by the in-memory row of the same augmentation setting "
        "(first by first, steady by steady); with augmentation that baseline runs the project's "
        "`augment_fn` on the in-memory uint8 tensors. Decoding the images and masks once for "
        f"it (one pass of `make_dataset(cache=False)`) took {load_s:.1f} s, outside its epochs. "
        f"The augmentation costs {aug_cost:.0%} of the in-memory rate ({base[True]:.1f} vs "
        f"{base[False]:.1f} images/s).",
        timer.load_note(),
    ]
    if args.note:
        lines.append(f"- {args.note}")
    lines += ["", "Command: `{COMMAND}`."]
    return lines


if __name__ == "__main__":
    main()
