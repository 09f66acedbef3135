"""Training-step cost of the from-scratch models under other numeric settings, as a ratio
against float32 measured in the same run: bfloat16 mixed precision (on CPUs with AVX512-BF16 /
AMX, oneDNN runs its convolutions in bfloat16) and XLA compilation (`jit_compile=True`).

Each setting runs in its own process (a Keras dtype policy is global): the model of
`breastus train-cls --model resnet50 --img-size 96 --weights none` (the RESULTS.md recipe) and
the U-Net EfficientNetB2 at 128 px, on random images, `train_on_batch` timed after warm-up
steps; the median step is reported. The settings are interleaved round by round, so a change
in the machine's load falls on all of them alike.

Run: .venv/bin/python benchmarks/train_precision.py [--steps 12] [--rounds 3] [--no-record]
Writes the table between the TRAIN_PRECISION markers of BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import json
import re
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import command_line, in_fresh_process  # noqa: E402
from _record import record  # noqa: E402

MODELS = {"resnet50": ("ResNet50 classifier, 96 px, batch 16", 96, 16),
          "unet": ("U-Net EfficientNetB2, 128 px, batch 8", 128, 8)}
SETTINGS = {"float32": ("float32 (baseline)", "float32", False),
            "bf16": ("mixed bfloat16", "mixed_bfloat16", False),
            "xla": ("float32, XLA", "float32", True)}


def _worker(model: str, setting: str, steps: int, warmup: int) -> None:
    """One model under one setting in this process: print the step seconds as JSON."""
    import time

    import numpy as np

    from breastus_cli import backend

    keras = backend.keras()
    _, size, batch = MODELS[model]
    _, policy, jit = SETTINGS[setting]
    keras.mixed_precision.set_global_policy(policy)
    keras.utils.set_random_seed(0)
    rng = np.random.default_rng(0)
    x = rng.uniform(0, 255, (batch, size, size, 1)).astype("float32")
    if model == "resnet50":
        from breastus_cli.models.classifiers import build_classifier

        net = build_classifier("resnet50", size, bn_momentum=0.9)
        y = rng.integers(0, 2, batch)
        loss = keras.losses.SparseCategoricalCrossentropy()
    else:
        from breastus_cli.models.segmenters import build_unet

        net = build_unet("efficientnetb2", size, bn_momentum=0.9)
        y = (rng.uniform(size=(batch, size, size, 1)) > 0.7).astype("float32")
        loss = keras.losses.BinaryCrossentropy()
    net.compile(optimizer=keras.optimizers.Adam(1e-3), loss=loss, jit_compile=jit)
    for _ in range(warmup):
        net.train_on_batch(x, y)
    times = []
    for _ in range(steps):
        start = time.perf_counter()
        value = net.train_on_batch(x, y)
        times.append(time.perf_counter() - start)
    print(json.dumps({"steps": times, "loss_finite": bool(np.isfinite(np.mean(value)))}))


def _measure(model: str, setting: str, steps: int, warmup: int) -> dict:
    """{"steps": [...], "loss_finite": bool}, or {"failed": the error's first line}."""
    result, stderr = in_fresh_process(__file__, "--worker", model, setting, "--steps",
                                      str(steps), "--warmup", str(warmup))
    if result is None:
        unsupported = re.search(r"Detected unsupported operations[^:]*: (\w+)", stderr)
        last = [line for line in stderr.strip().splitlines() if line.strip()][-1:]
        return {"failed": (f"unsupported operation {unsupported[1]}" if unsupported
                           else (last[0][:120] if last else "failed"))}
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--steps", type=int, default=12)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--models", nargs="+", default=list(MODELS), choices=list(MODELS))
    parser.add_argument("--worker", nargs=2, metavar=("MODEL", "SETTING"))
    parser.add_argument("--no-record", action="store_true")
    args = parser.parse_args()
    if args.worker:
        _worker(*args.worker, args.steps, args.warmup)
        return
    samples = {(m, s): [] for m in args.models for s in SETTINGS}
    finite, failed = {}, {}
    for round_ in range(args.rounds):
        for model in args.models:
            for setting in SETTINGS:
                if (model, setting) in failed:
                    continue
                result = _measure(model, setting, args.steps, args.warmup)
                if "failed" in result:
                    failed[model, setting] = result["failed"]
                    print(f"round {round_ + 1}: {model} {setting} failed: {result['failed']}",
                          flush=True)
                    continue
                samples[model, setting] += result["steps"]
                finite[model, setting] = result["loss_finite"]
                print(f"round {round_ + 1}: {model} {setting} median "
                      f"{statistics.median(result['steps']):.3f} s/step", flush=True)
    lines = ["| model | setting | median s / step | x float32 | loss finite |",
             "|---|---|---:|---:|---|"]
    for model in args.models:
        base = statistics.median(samples[model, "float32"])
        for setting, (label, _, _) in SETTINGS.items():
            if (model, setting) in failed:
                lines.append(f"| {MODELS[model][0]} | {label} | fails: "
                             f"{failed[model, setting]} | | |")
                continue
            med = statistics.median(samples[model, setting])
            lines.append(f"| {MODELS[model][0]} | {label} | {med:.3f} | {base / med:.2f} | "
                         f"{'yes' if finite[model, setting] else 'NO'} |")
    lines += ["", f"x float32 = float32's median step time / this setting's (above 1: faster). "
              f"{args.rounds} rounds of {args.steps} steps after {args.warmup} warm-up steps "
              f"each, the settings interleaved. Command: `{command_line('train_precision.py')}`."]
    body = "\n".join(lines)
    print(body)
    if not args.no_record:
        record("TRAIN_PRECISION", body)


if __name__ == "__main__":
    main()
