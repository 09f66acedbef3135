"""A classifier run's TFLite exports against its Keras model: label agreement on two datasets
and the end-to-end `breastus predict` rate of each file, as ratios against the Keras model
measured in the same run.

    agreement  every export file of RUN/export/ (model.tflite, model-float16.tflite,
               model-int8.tflite, model-int8-mixed.tflite, those present) against the run's
               Keras model on the run's whole test split and on every benign/malignant image
               of each --data dataset: the share of images given the same label at the run's
               threshold, and the largest |difference| of p(malignant)
    predict    `breastus predict FOLDER --cls-run X --out OUT` as a subprocess, X the run
               directory (Keras) or one export file, process wall time; the engines
               interleaved round by round in a rotated order (a training queue shares the
               machine), medians over the rounds

The folder holds the first --n images of the first --data dataset (links, no copy).

Run: python benchmarks/lite_export.py RUN --data PREPARED [PREPARED ...] [--n 200]
     [--rounds 3] [--no-record]
Writes the tables between the LITE_EXPORT markers of BENCHMARKS.md unless --no-record.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import Load, command_line, rotated, shown  # noqa: E402
from _record import record  # noqa: E402

from breastus_cli.engine.apply.tflite_model import EXPORT_DIR, TFLITE_FILES  # noqa: E402

EXE = Path(sys.executable).with_name("breastus")
LABELS = {"none": "TFLite float32", "float16": "TFLite float16", "int8": "TFLite int8",
          "int8-mixed": "TFLite int8-mixed"}


def _exports(run: Path) -> dict[str, Path]:
    return {q: run / EXPORT_DIR / name for q, name in TFLITE_FILES.items()
            if (run / EXPORT_DIR / name).is_file()}


def _dataset_images(data: Path, size: int) -> tuple[np.ndarray, list[str]]:
    """Every benign/malignant image of a prepared dataset, as the model takes it."""
    import pandas as pd

    from breastus_cli.data.pipeline import load_arrays

    frame = pd.read_csv(data / "manifest.csv")
    frame = frame[frame["label"].isin(["benign", "malignant"])]
    paths = [str(data / p) for p in frame["image"]]
    return load_arrays(paths, size).astype(np.float32), paths


def agreement(run: Path, datasets: list[Path]) -> list[str]:
    """Markdown rows: dataset, file, images, same label, max |dp|."""
    from breastus_cli.engine.apply.loaded_run import load_model
    from breastus_cli.engine.apply.tflite_model import TFLiteModel
    from breastus_cli.engine.export.export_inputs import _input_cases, _model_inputs
    from breastus_cli.engine.runs.rundir import read_config, read_threshold

    config = read_config(run)
    size = int(config["settings"]["img_size"])
    threshold = read_threshold(run, config).value
    model = load_model(run)
    sets = [(f"{shown(config['settings']['data'])} test split",
             _model_inputs(config, _input_cases(config, "test", None, None), size))]
    sets += [(f"{shown(d)} (all)", _dataset_images(d, size)[0]) for d in datasets]
    rows = []
    for name, images in sets:
        reference = model.predict(images, batch_size=32, verbose=0)[:, 1]
        for quantize, path in _exports(run).items():
            outputs = TFLiteModel(path).predict(images)[:, 1]
            same = ((outputs >= threshold) == (reference >= threshold)).mean()
            rows.append(f"| {name} | {LABELS[quantize]} | {len(images)} | {same:.1%} | "
                        f"{np.abs(outputs - reference).max():.3f} |")
            print(rows[-1], flush=True)
    return rows


def _folder(data: Path, n: int, tmp: Path) -> Path:
    import pandas as pd

    frame = pd.read_csv(data / "manifest.csv")
    folder = tmp / "scans"
    folder.mkdir()
    for image in list(frame["image"])[:n]:
        os.symlink(data / image, folder / Path(image).name)
    return folder


def predict_rates(run: Path, folder: Path, rounds: int, tmp: Path) -> tuple[list[str], Load]:
    engines = [("Keras (baseline)", run)] + [(LABELS[q], p) for q, p in _exports(run).items()]
    n = len(list(folder.iterdir()))
    seconds: dict[str, list[float]] = {name: [] for name, _ in engines}
    children = os.times()
    with Load() as load:
        for round_ in range(rounds):
            for name, model in rotated(engines, round_):
                out = tmp / f"out-{round_}-{len(seconds[name])}-{name.split()[-1]}"
                start = time.perf_counter()
                proc = subprocess.run([str(EXE), "predict", str(folder), "--cls-run", str(model),
                                       "--out", str(out), "--quiet"],
                                      capture_output=True, text=True)
                wall = time.perf_counter() - start
                if proc.returncode != 0:
                    raise SystemExit(f"{name}: predict failed: {proc.stderr.strip()[-300:]}")
                seconds[name].append(wall)
                print(f"round {round_ + 1}: {name}: {wall:.1f} s, {n / wall:.1f} images/s",
                      flush=True)
        now = os.times()  # the predict processes' CPU time is ours, not others'
        load.child = (now.children_user + now.children_system
                      - children.children_user - children.children_system)
    base = statistics.median(seconds[engines[0][0]])
    rows = []
    for name, _ in engines:
        med = statistics.median(seconds[name])
        rows.append(f"| {name} | {med:.1f} | {n / med:.1f} | {base / med:.2f} |")
    return rows, load


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run", type=Path)
    parser.add_argument("--data", type=Path, nargs="+", required=True,
                        help="prepared datasets to measure agreement on (the first also gives "
                             "the predict folder)")
    parser.add_argument("--n", type=int, default=200, help="images in the predict folder")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--skip-agreement", action="store_true")
    parser.add_argument("--no-record", action="store_true")
    args = parser.parse_args()

    lines = []
    if not args.skip_agreement:
        lines += ["| images | file | n | same label as Keras | max abs diff p |",
                  "|---|---|---:|---:|---:|", *agreement(args.run, args.data), ""]
    with tempfile.TemporaryDirectory(prefix="lite-export-") as tmp:
        folder = _folder(args.data[0], args.n, Path(tmp))
        rows, load = predict_rates(args.run, folder, args.rounds, Path(tmp))
    n = len(rows) and args.n
    lines += ["| `breastus predict` engine | median s (process) | images/s | x Keras |",
              "|---|---:|---:|---:|", *rows, "",
              f"- Predict: {n} images of {shown(args.data[0])} in one folder, the whole "
              f"process timed (start-up, model load, decode, forward, writing), {args.rounds} "
              f"rounds, the engines in a rotated order; medians.",
              f"- Loaded machine: other processes used {load.cores:.2f} cores on average during "
              f"the predict rounds (/proc/stat less this process and the predict processes).",
              f"- Command: `{command_line('lite_export.py')}`."]
    body = "\n".join(lines)
    print(body)
    if not args.no_record:
        record("LITE_EXPORT", body)


if __name__ == "__main__":
    main()
