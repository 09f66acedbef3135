"""Loading a run's model.keras: breastus's safe loader (its weights read from memory) against
`keras.models.load_model(compile=False, safe_mode=True)` (the weights read through the zip
archive), as a ratio measured in the same run.

The models are this project's, built untrained at the RESULTS.md sizes and saved as training
saves them (an optimizer-free copy): ResNet50 at 96 px and the U-Net EfficientNetB2 at 128 px.
Each load runs in a fresh process (nothing cached), the two loaders alternating, and the median
of the rounds is reported. Files go to a folder under --work (default: benchmarks/.work).

Run: .venv/bin/python benchmarks/model_load.py [--rounds 3] [--no-record]
Writes the table between the MODEL_LOAD markers of BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import command_line, in_fresh_process  # noqa: E402
from _record import record  # noqa: E402

MODELS = {"resnet50": "ResNet50 classifier, 96 px", "unet": "U-Net EfficientNetB2, 128 px"}
LOADERS = {"keras": "keras.models.load_model (baseline)", "breastus": "breastus safe loader"}


def _save(model: str, path: Path) -> None:
    from breastus_cli import backend

    keras = backend.keras()
    if model == "resnet50":
        from breastus_cli.models.classifiers import build_classifier

        net = build_classifier("resnet50", 96, bn_momentum=0.9)
    else:
        from breastus_cli.models.segmenters import build_unet

        net = build_unet("efficientnetb2", 128, bn_momentum=0.9)
    keras.models.clone_model(net).save(path)
    print(json.dumps({"saved": str(path)}))


def _load(loader: str, path: Path) -> None:
    import time

    from breastus_cli import backend

    keras = backend.keras()
    backend.sm()  # the encoders' objects registered, as breastus's loader has them
    from breastus_cli.engine.training import tasks  # noqa: F401  (breastus's registered objects)
    from breastus_cli.models.safe_load import load_keras_model

    start = time.perf_counter()
    if loader == "keras":
        keras.models.load_model(path, compile=False, safe_mode=True)
    else:
        load_keras_model(path)
    print(json.dumps({"seconds": time.perf_counter() - start}))


def _child(*args: str) -> dict:
    result, stderr = in_fresh_process(__file__, *args)
    if result is None:
        raise SystemExit(f"{args} failed:\n{stderr[-3000:]}")
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--work", type=Path, default=Path(__file__).resolve().parent / ".work")
    parser.add_argument("--save", nargs=2, metavar=("MODEL", "PATH"))
    parser.add_argument("--load", nargs=2, metavar=("LOADER", "PATH"))
    parser.add_argument("--no-record", action="store_true")
    args = parser.parse_args()
    if args.save:
        _save(args.save[0], Path(args.save[1]))
        return
    if args.load:
        _load(args.load[0], Path(args.load[1]))
        return
    folder = args.work / "model-load"
    folder.mkdir(parents=True, exist_ok=True)
    files = {}
    for model in MODELS:
        files[model] = folder / f"{model}.keras"
        if not files[model].is_file():
            _child("--save", model, str(files[model]))
    seconds = {(m, loader): [] for m in MODELS for loader in LOADERS}
    for round_ in range(args.rounds):
        for model in MODELS:
            order = list(LOADERS) if round_ % 2 == 0 else list(reversed(LOADERS))
            for loader in order:
                took = _child("--load", loader, str(files[model]))["seconds"]
                seconds[model, loader].append(took)
                print(f"round {round_ + 1}: {model} {loader} {took:.2f} s", flush=True)
    lines = ["| model | file MB | loader | median s | x baseline |", "|---|---:|---|---:|---:|"]
    for model, label in MODELS.items():
        size = files[model].stat().st_size / 1e6
        base = statistics.median(seconds[model, "keras"])
        for loader, name in LOADERS.items():
            med = statistics.median(seconds[model, loader])
            lines.append(f"| {label} | {size:.0f} | {name} | {med:.2f} | {base / med:.2f} |")
    lines += ["", f"x baseline = Keras's load time / this loader's (above 1: faster); median of "
              f"{args.rounds} rounds, each load in a fresh process, the loaders alternating. "
              f"Command: `{command_line('model_load.py')}`."]
    body = "\n".join(lines)
    print(body)
    if not args.no_record:
        record("MODEL_LOAD", body)


if __name__ == "__main__":
    main()
