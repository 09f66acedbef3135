"""`breastus predict` throughput, memory and engine agreement, as ratios measured in one run.

    baseline     the run's Keras model on preloaded (N, S, S, 1) float32 tensors, in the same
                 compiled function predict builds (input_signature [None, S, S, 1]), batch 16
    predict      `breastus predict FOLDER --cls-run ... --batch-size 16` as a subprocess, end
                 to end (process wall time) and the rate predict itself reports (rows / time
                 from the first decode to the last row: the "images/s" of its summary)
    engines      --engine keras, --engine tflite (RUN/export/model.tflite, float32) and the
                 int8 export (RUN/export/model-int8.tflite given as --cls-run)
    memory       peak RSS of each predict process (ru_maxrss) on N and on 10N images
    agreement    labels of each TFLite predictions.csv against the Keras one, p >= 0.5

The run directory costs no real training: a MobileNetV2 classifier (--weights none) trained
for --epochs on a synthetic BrEaST-layout dataset (`breastus train-cls`), then exported with
`breastus export --format tflite` and `--quantize int8`. The folder of N scans holds the
synthetic source PNGs (400-800 px, RGBA/tinted like the real archive), cycled under new names
(hard links; 10N reuses them the same way).

Where predict falls short of the forward pass, an in-process run of
`breastus_cli.engine.apply.predict.predict` with timers around its parts (waiting for the decode
threads, the per-image resize, the model, writing rows) says where the time goes.

Run: .venv/bin/python benchmarks/predict_throughput.py [--n 200] [--scale 10] [--repeat 3]
     [--work DIR] [--quick]
Writes the result between the PREDICT_THROUGHPUT markers of BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import BREAST, Load, command_line, own_cpu_seconds, rotated, shown  # noqa: E402
from _record import record  # noqa: E402

from breastus_cli.engine.apply.tflite_model import TFLITE_FILES  # noqa: E402

FLOAT32, INT8 = TFLITE_FILES["none"], TFLITE_FILES["int8"]  # RUN/export/ file names

SECTION = "PREDICT_THROUGHPUT"
EXE = Path(sys.executable).with_name("breastus")
ENGINES = ("keras", "tflite float32", "tflite int8")
SEG = "segmenter (keras)"
FIRST = "model forward, first batch (tracing / tensor allocation), in a forward thread"
FORWARD = ("model forward, summed over the forward threads (with the Keras engine two batches "
           "run at once: overlapping)")
MAIN_REST = ("main thread, the rest: waiting for the model and the rows thread, stacking, "
             "progress")
TRAMPOLINE = ("import resource, subprocess, sys; rc = subprocess.call(sys.argv[2:]); "
              "open(sys.argv[1], 'w').write(str(resource.getrusage("
              "resource.RUSAGE_CHILDREN).ru_maxrss)); sys.exit(rc)")


# ---- setup: data, run directory, exports, scan folders --------------------------------------
def _cli(*argv: str) -> None:
    subprocess.run([str(EXE), "-q", *argv], check=True)


def _setup(work: Path, args: argparse.Namespace) -> tuple[Path, list[Path]]:
    """The run directory (trained, exported) and the synthetic source scans; reused if there."""
    from breastus_cli.data.prepare import PrepareSettings, prepare
    from breastus_cli.data.split import SplitSettings, split_dataset
    from breastus_cli.data.synth import SynthSettings, make_synthetic_breast

    synth, data = work / "synth", work / "data"
    run = Path(args.run) if args.run is not None else work / "run"
    if not (data / "splits.csv").is_file():
        shutil.rmtree(synth, ignore_errors=True)
        shutil.rmtree(data, ignore_errors=True)
        make_synthetic_breast(SynthSettings(synth, cases=args.cases, min_side=400, max_side=800))
        prepare(PrepareSettings(source=synth, out=data))
        split_dataset(SplitSettings(data))
    if args.run is not None and not (run / "model.keras").is_file():
        raise SystemExit(f"--run {run}: no model.keras there")
    if not (run / "model.keras").is_file():
        shutil.rmtree(run, ignore_errors=True)
        started = time.perf_counter()
        _cli("train-cls", str(data), "--model", "mobilenetv2", "--weights", "none", "--offline",
             "--img-size", str(args.img_size), "--epochs", str(args.epochs), "--lr",
             str(args.lr), "--bn-momentum", str(args.bn_momentum), "--monitor", "val_loss",
             "--run-dir", str(run))
        print(f"trained {run} in {time.perf_counter() - started:.0f} s", flush=True)
    for quantize, name in (("none", FLOAT32), ("int8", INT8)):
        if not (run / "export" / name).is_file():
            _cli("export", str(run), "--format", "tflite", "--quantize", quantize)
    real = BREAST / "BrEaST-Lesions_USG-images_and_masks"
    use_real = args.scans == "real" or (args.scans == "auto" and real.is_dir())
    if args.scans == "real" and not real.is_dir():
        raise SystemExit(f"--scans real: {shown(real)} is not there")
    source = real if use_real else synth / "BrEaST-Lesions_USG-images_and_masks"
    if not use_real and not source.is_dir():  # the training data above came from --run
        make_synthetic_breast(SynthSettings(synth, cases=args.cases, min_side=400, max_side=800))
    scans = sorted(p for p in source.glob("case*.png") if "_" not in p.stem)
    if not scans:
        raise SystemExit(f"no scans under {source}")
    return run, scans


def _folder(target: Path, sources: list[Path], n: int) -> Path:
    """``n`` scans under new names, cycling through ``sources`` (hard links, else copies)."""
    if target.is_dir() and len(list(target.iterdir())) == n:
        return target
    shutil.rmtree(target, ignore_errors=True)
    target.mkdir(parents=True)
    for i in range(n):
        source, dest = sources[i % len(sources)], target / f"scan{i:06d}.png"
        try:
            os.link(source, dest)
        except OSError:
            shutil.copyfile(source, dest)
    return target


# ---- baselines: each engine's forward pass on preloaded tensors -----------------------------
def _preload(folder: Path, size: int) -> np.ndarray:
    """The folder's scans decoded and resized exactly as predict does."""
    from breastus_cli import backend
    from breastus_cli.data.imaging import read_luminance
    from breastus_cli.engine.apply.predict_rows import resized

    tf = backend.tf()
    files = sorted(folder.iterdir())
    return np.stack([resized(read_luminance(f), size, tf) for f in files])


def _keras_forward(run: Path, images: np.ndarray, batch: int) -> tuple[Any, list]:
    """The run's model in the compiled function predict builds (input_signature
    [None, S, S, 1]), and ``images`` as tf.constant batches for it."""
    from breastus_cli import backend
    from breastus_cli.engine.apply.loaded_run import load_model

    tf = backend.tf()
    size = images.shape[1]
    model = load_model(run)
    forward = tf.function(lambda x: model(x, training=False), reduce_retracing=True,
                          input_signature=[tf.TensorSpec([None, size, size, 1], tf.float32)])
    return forward, [tf.constant(images[i:i + batch]) for i in range(0, len(images), batch)]


def _forward_rates(run: Path, images: np.ndarray, batch: int, repeat: int) -> dict[str, dict]:
    """images/s of each engine's own forward pass over preloaded batches (median of repeats,
    after one warm pass), interleaved so machine load hits all alike."""
    from breastus_cli.engine.export.export import TFLiteModel

    forward, tensors = _keras_forward(run, images, batch)
    arrays = [np.ascontiguousarray(images[i:i + batch]) for i in range(0, len(images), batch)]
    lite_float = TFLiteModel(run / "export" / FLOAT32)
    lite_int8 = TFLiteModel(run / "export" / INT8)
    passes = {
        "keras": lambda: [forward(t).numpy() for t in tensors],
        "tflite float32": lambda: [lite_float.predict(a) for a in arrays],
        "tflite int8": lambda: [lite_int8.predict(a) for a in arrays],
    }
    samples: dict[str, list[float]] = defaultdict(list)
    cpu: dict[str, list[float]] = defaultdict(list)
    loads: list[float] = []
    for fn in passes.values():
        fn()  # trace / allocate
    for r in range(repeat):
        for name in rotated(ENGINES, r):
            with Load() as load:
                start, cpu0 = time.perf_counter(), own_cpu_seconds()
                passes[name]()
                samples[name].append(time.perf_counter() - start)
                cpu[name].append(own_cpu_seconds() - cpu0)
            loads.append(load.cores)
    return {name: {"rate": len(images) / statistics.median(samples[name]),
                   "spread": (len(images) / max(samples[name]), len(images) / min(samples[name])),
                   "cpu": statistics.median(cpu[name]) / len(images),
                   "others": max(loads)} for name in ENGINES}


# ---- predict as the user runs it ------------------------------------------------------------
def _source(run: Path, engine: str) -> list[str]:
    if engine == SEG:
        return ["--seg-run", str(run)]
    if engine == "keras":
        return ["--cls-run", str(run)]
    if engine == "tflite float32":
        return ["--cls-run", str(run), "--engine", "tflite"]
    return ["--cls-run", str(run / "export" / INT8), "--engine", "tflite"]


def _predict(folder: Path, out: Path, run: Path, engine: str, batch: int) -> dict:
    """One `breastus predict` process: wall seconds, peak RSS (MiB), its reported images/s."""
    command = [str(EXE), "predict", str(folder), "--out", str(out), "--batch-size", str(batch),
               "--overwrite", *_source(run, engine)]
    # A child's peak RSS starts at its parent's RSS when it execs (Linux records the forked
    # copy's high-water mark), and this process holds TensorFlow and three models: a small
    # Python trampoline forks predict instead and reports its children's peak.
    rss_file = out.with_suffix(".rss")
    env = {**os.environ, "COLUMNS": "160"}
    env.pop("BREASTUS_THREADS", None)
    log = out.with_suffix(".log")
    out.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "w") as fh, Load() as load:
        start = time.perf_counter()
        proc = subprocess.Popen([sys.executable, "-S", "-c", TRAMPOLINE, str(rss_file),
                                 *command], stdout=fh, stderr=subprocess.STDOUT, env=env)
        _, status, usage = os.wait4(proc.pid, 0)
        wall = time.perf_counter() - start
        proc.returncode = os.waitstatus_to_exitcode(status)
        load.child = usage.ru_utime + usage.ru_stime
    text = log.read_text()
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(command)} failed ({proc.returncode}):\n{text[-3000:]}")
    rate = re.search(r"images/s\W+([\d.]+)", text)
    seconds = re.search(r"\bseconds\W+([\d.]+)", text)
    rss_kib = int(rss_file.read_text())
    return {"wall": wall, "rss_mib": rss_kib / 1024, "rate": float(rate.group(1)),
            "seconds": float(seconds.group(1)), "cpu": usage.ru_utime + usage.ru_stime,
            "others": load.cores}


def _probabilities(out: Path) -> dict[str, float]:
    with open(out / "predictions.csv", newline="") as fh:
        return {row["path"]: float(row["p_malignant"]) for row in csv.DictReader(fh)}


def _steady(small: list[dict], big: dict, n: int, big_n: int, forward_cpu: float,
            cores: int) -> dict[str, float]:
    """The issue's figures from the N runs (medians) and the 10N run: what the extra images
    cost, start-up (imports, model loading) cancelled out. ``cpu``: the predict process's CPU
    seconds per image; ``rate``: images/s; ``overhead``: (cpu - the forward's) / the forward's;
    ``efficiency``: rate x cpu / cores (1 = every core busy all the time)."""
    wall = statistics.median(r["wall"] for r in small)
    cpu0 = statistics.median(r["cpu"] for r in small)
    extra_cpu, extra_wall = big["cpu"] - cpu0, big["wall"] - wall
    if extra_cpu <= 0 or extra_wall <= 0:  # noise larger than the extra images' cost
        nan = float("nan")
        return {"cpu": nan, "rate": nan, "overhead": nan, "efficiency": nan}
    cpu, rate = extra_cpu / (big_n - n), (big_n - n) / extra_wall
    return {"cpu": cpu, "rate": rate, "overhead": (cpu - forward_cpu) / forward_cpu,
            "efficiency": rate * cpu / cores}


def _seg_forward(run: Path, images: np.ndarray, batch: int, repeat: int) -> dict[str, float]:
    """The segmenter's compiled forward on preloaded tensors: images/s and CPU s per image."""
    forward, tensors = _keras_forward(run, images, batch)
    [forward(t).numpy() for t in tensors]  # trace
    walls, cpus = [], []
    for _ in range(repeat):
        start, cpu0 = time.perf_counter(), own_cpu_seconds()
        [forward(t).numpy() for t in tensors]
        walls.append(time.perf_counter() - start)
        cpus.append(own_cpu_seconds() - cpu0)
    return {"rate": len(images) / statistics.median(walls),
            "cpu": statistics.median(cpus) / len(images)}


# ---- where predict's time goes --------------------------------------------------------------
RESIZE_MAIN = "resize (imaging.resize_grey, PIL bilinear) in the main thread"
RESIZE_THREADS = ("resize (imaging.resize_grey, PIL bilinear) in the decoding threads: "
                  "overlaps the rest, not counted in the loop")


def _profile(folder: Path, out: Path, run: Path, engine: str, batch: int) -> dict[str, float]:
    """An in-process predict() with timers around its parts; seconds per part and in all."""
    import breastus_cli.engine.apply.predict as P
    import breastus_cli.engine.apply.predict_output as O
    import breastus_cli.engine.apply.predict_rows as R

    timers: dict[str, float] = defaultdict(float)
    originals = (R.resized, P.open_model, P.batches, O.Appender.write)

    def resized(*a, **k):
        start = time.perf_counter()
        try:
            return originals[0](*a, **k)
        finally:
            key = (RESIZE_MAIN if threading.current_thread() is threading.main_thread()
                   else RESIZE_THREADS)
            timers[key] += time.perf_counter() - start

    def open_model(*a, **k):
        model = originals[1](*a, **k)
        run_model = model.run

        def timed(x):
            key = FORWARD if FORWARD in timers or FIRST in timers else FIRST
            start = time.perf_counter()
            try:
                return run_model(x)
            finally:
                timers[key] += time.perf_counter() - start

        model.run = timed
        return model

    def batches(*a, **k):
        generator = originals[2](*a, **k)
        while True:
            start = time.perf_counter()
            try:
                item = next(generator)
            except StopIteration:
                return
            finally:
                timers["waiting for decoded images (2 threads)"] += time.perf_counter() - start
            yield item

    def write(self, rows):
        start = time.perf_counter()
        try:
            return originals[3](self, rows)
        finally:
            timers["writing rows (CSV + fsync)"] += time.perf_counter() - start

    source = _source(run, engine)
    settings = P.PredictSettings(inputs=[folder], out=out, cls_run=Path(source[1]),
                                 engine="tflite" if "tflite" in engine else "keras",
                                 batch_size=batch, overwrite=True)
    R.resized, P.open_model, P.batches, O.Appender.write = resized, open_model, batches, write
    try:
        with Load() as load:
            result = P.predict(settings)
    finally:
        R.resized, P.open_model, P.batches, O.Appender.write = originals
    loop = result.rows / result.images_per_second
    # the forward passes run in predict's forward threads (two batches at once with the Keras
    # engine) and the decoding threads' resizing overlaps everything: only the main thread's
    # own parts are taken from the loop's time
    threads = (RESIZE_THREADS, FIRST, FORWARD)
    timers[MAIN_REST] = loop - sum(v for k, v in timers.items() if k not in threads)
    timers["loop"] = loop
    timers["others_cores"] = load.cores
    return dict(timers)


def _serial_costs(folder: Path, size: int, limit: int) -> dict[str, float]:
    """Seconds per image of each step run alone, one thread: decode (PIL, luminance), resize."""
    from breastus_cli import backend
    from breastus_cli.data.imaging import read_luminance
    from breastus_cli.engine.apply.predict_rows import resized

    tf = backend.tf()
    files = sorted(folder.iterdir())[:limit]
    resized(read_luminance(files[0]), size, tf)
    start = time.perf_counter()
    decoded = [read_luminance(f) for f in files]
    decode = (time.perf_counter() - start) / len(files)
    start = time.perf_counter()
    for image in decoded:
        resized(image, size, tf)
    resize = (time.perf_counter() - start) / len(files)
    pixels = statistics.mean(i.size for i in decoded)
    return {"decode": decode, "resize": resize, "pixels": pixels}


# ---- the benchmark --------------------------------------------------------------------------
def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=200, help="images in the folder (default 200)")
    parser.add_argument("--scale", type=int, default=10,
                        help="the memory check's second folder holds scale x n images")
    parser.add_argument("--img-size", type=int, default=224)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--epochs", type=int, default=2, help="training epochs of the run")
    parser.add_argument("--lr", type=float, default=1e-3, help="its learning rate")
    parser.add_argument("--bn-momentum", type=float, default=0.5,
                        help="its batch-norm momentum (0.9 leaves a 2-epoch model's inference "
                             "statistics unsettled: one constant output, labels all alike)")
    parser.add_argument("--cases", type=int, default=200, help="synthetic cases (train data)")
    parser.add_argument("--repeat", type=int, default=3,
                        help="predict runs per engine on N images (median kept)")
    parser.add_argument("--forward-repeat", type=int, default=5,
                        help="timed passes of each engine's forward on preloaded tensors")
    parser.add_argument("--run", type=Path, default=None,
                        help="an existing classifier run directory to measure instead of "
                             "training one (its img_size is used; missing TFLite exports are "
                             "written into RUN/export, int8 needs the run's dataset)")
    parser.add_argument("--scans", choices=("auto", "real", "synthetic"), default="auto",
                        help="the scans predicted: BrEaST's own PNGs from ../shared/data (auto: "
                             "when present) or synthetic BrEaST-layout PNGs")
    parser.add_argument("--seg-run", type=Path, default=None,
                        help="a segmentation run: measure `predict --seg-run` the same way "
                             "(Keras engine)")
    parser.add_argument("--work", type=Path, default=None,
                        help="keep the run, exports and folders here (reused when present)")
    parser.add_argument("--note", default="", help="a line added under the table")
    parser.add_argument("--quick", action="store_true",
                        help="smoke test: 24 cases, n 32, scale 3, image size 96, 1 repeat")
    parser.add_argument("--no-record", action="store_true",
                        help="print the table only; leave BENCHMARKS.md alone")
    args = parser.parse_args()
    if args.quick:
        args.cases, args.n, args.scale, args.img_size = 24, 32, 3, 96
        args.repeat, args.forward_repeat = 1, 2
    command = command_line("predict_throughput.py")

    from breastus_cli import backend

    backend.configure()
    if args.work is not None:
        args.work.mkdir(parents=True, exist_ok=True)
        body = _run(args, args.work)
    else:
        with tempfile.TemporaryDirectory(prefix="bench-predict-") as tmp:
            body = _run(args, Path(tmp))
    body = body.replace("{COMMAND}", command)
    print(body)
    if not args.no_record:
        record(SECTION, body)


def _run(args: argparse.Namespace, work: Path) -> str:
    from breastus_cli import backend

    tf = backend.tf()
    run, scans = _setup(work, args)
    if args.run is not None:
        from breastus_cli.engine.runs.rundir import read_config

        args.img_size = int(read_config(run)["settings"]["img_size"])
    n, big = args.n, args.n * args.scale
    small_dir = _folder(work / f"scans-{n}", scans, n)
    big_dir = _folder(work / f"scans-{big}", scans, big)
    sizes = {name: (run / "export" / name).stat().st_size / 1e6
             for name in (FLOAT32, INT8)}
    sizes["model.keras"] = (run / "model.keras").stat().st_size / 1e6
    files = {"keras": "model.keras", "tflite float32": FLOAT32, "tflite int8": INT8}

    # 1. each engine's own forward pass on preloaded tensors
    images = _preload(small_dir, args.img_size)
    forward = _forward_rates(run, images, args.batch_size, args.forward_repeat)
    for name in ENGINES:
        print(f"forward {name:15s} {forward[name]['rate']:7.1f} images/s", flush=True)

    # 2. breastus predict, end to end, N images (repeated, interleaved) and 10N images
    runs: dict[str, list[dict]] = defaultdict(list)
    for name in ENGINES:  # untimed: file cache (libraries, model, scans) warm for every engine
        _predict(small_dir, work / "out" / "warm-up", run, name, args.batch_size)
    for r in range(args.repeat):
        for name in rotated(ENGINES, r):
            result = _predict(small_dir, work / "out" / f"{name.replace(' ', '-')}-{n}", run,
                              name, args.batch_size)
            runs[name].append(result)
            print(f"predict {name:15s} N={n:5d} wall {result['wall']:6.1f} s, reported "
                  f"{result['rate']:6.1f} images/s, RSS {result['rss_mib']:6.0f} MiB, others "
                  f"{result['others']:.2f} cores", flush=True)
    bigs: dict[str, dict] = {}
    for name in ENGINES:
        bigs[name] = _predict(big_dir, work / "out" / f"{name.replace(' ', '-')}-{big}", run,
                              name, args.batch_size)
        result = bigs[name]
        print(f"predict {name:15s} N={big:5d} wall {result['wall']:6.1f} s, reported "
              f"{result['rate']:6.1f} images/s, RSS {result['rss_mib']:6.0f} MiB, others "
              f"{result['others']:.2f} cores", flush=True)

    # 2b. the segmenter through predict --seg-run, the same way (Keras engine)
    seg: dict | None = None
    if args.seg_run is not None:
        from breastus_cli.engine.runs.rundir import read_config

        seg_size = int(read_config(args.seg_run)["settings"]["img_size"])
        seg_forward = _seg_forward(args.seg_run, _preload(small_dir, seg_size),
                                   args.batch_size, args.forward_repeat)
        seg_runs = [_predict(small_dir, work / "out" / f"seg-{n}", args.seg_run, SEG,
                             args.batch_size) for _ in range(args.repeat)]
        seg_big = _predict(big_dir, work / "out" / f"seg-{big}", args.seg_run, SEG,
                           args.batch_size)
        seg = {"size": seg_size, "forward": seg_forward, "runs": seg_runs, "big": seg_big}
        print(f"predict {SEG} N={n}: reported "
              f"{statistics.median(r['rate'] for r in seg_runs):.1f} images/s; forward "
              f"{seg_forward['rate']:.1f} images/s", flush=True)

    # 3. agreement with the Keras predictions (the N run)
    reference = _probabilities(work / "out" / f"keras-{n}")
    p_ref = np.array(list(reference.values()))
    agreement: dict[str, dict] = {}
    for name in ENGINES[1:]:
        other = _probabilities(work / "out" / f"{name.replace(' ', '-')}-{n}")
        p = np.array([other[k] for k in reference])
        agreement[name] = {"labels": float(np.mean((p >= 0.5) == (p_ref >= 0.5))),
                           "max_diff": float(np.max(np.abs(p - p_ref))),
                           "mean_diff": float(np.mean(np.abs(p - p_ref)))}
    metadata = json.loads((run / "export" / "metadata.json").read_text())["exports"]

    # 4. where predict's time goes (in-process, timers), and each step alone
    serial = _serial_costs(small_dir, args.img_size, min(n, 100))
    profiles = {name: _profile(small_dir, work / "out" / f"profile-{name.replace(' ', '-')}",
                               run, name, args.batch_size) for name in ENGINES}

    # ---- the tables ----
    med = {name: {key: statistics.median(r[key] for r in runs[name])
                  for key in ("wall", "rate", "rss_mib", "seconds")} for name in ENGINES}
    marginal = {name: (big - n) / (bigs[name]["wall"] - med[name]["wall"])
                if bigs[name]["wall"] > med[name]["wall"] else float("nan") for name in ENGINES}
    keras_rate = med["keras"]["rate"]
    lines = [
        f"Throughput, N = {n} scans (`--batch-size {args.batch_size}`, image size "
        f"{args.img_size}):",
        "",
        "| engine | model file, MB | forward on preloaded tensors, images/s | predict "
        "(its own images/s) | x own forward | x Keras forward (baseline) | process wall, s | "
        f"end to end, images/s | marginal images/s ({n} -> {big}) | predict x Keras predict |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for name in ENGINES:
        m = med[name]
        lines.append(
            f"| {name} | {files[name]} {sizes[files[name]]:.1f} | {forward[name]['rate']:.1f} | "
            f"{m['rate']:.1f} | {m['rate'] / forward[name]['rate']:.2f} | "
            f"{m['rate'] / forward['keras']['rate']:.2f} | {m['wall']:.1f} | "
            f"{n / m['wall']:.1f} | {marginal[name]:.1f} | {m['rate'] / keras_rate:.2f} |")
    lines += [
        "",
        "Memory and agreement:",
        "",
        f"| engine | peak RSS, {n} images, MiB | peak RSS, {big} images, MiB | x ({big} / {n}) "
        f"| labels = Keras (p >= 0.5, {n} scans) | max / mean abs diff of p | export's own "
        "check (32 test images) |",
        "|---|---:|---:|---:|---:|---:|---|",
    ]
    for name in ENGINES:
        rss_small, rss_big = med[name]["rss_mib"], bigs[name]["rss_mib"]
        if name == "keras":
            agree, diff, own = "(reference)", "", ""
        else:
            a = agreement[name]
            m = metadata.get(files[name], {}).get("agreement", {})
            agree = f"{a['labels']:.1%}"
            diff = f"{a['max_diff']:.4f} / {a['mean_diff']:.4f}"
            own = (f"labels {m.get('label_agreement', float('nan')):.0%}, max diff "
                   f"{m.get('max_abs_diff', float('nan')):.4f}")
        lines.append(f"| {name} | {rss_small:.0f} | {rss_big:.0f} | {rss_big / rss_small:.2f} "
                     f"| {agree} | {diff} | {own} |")
    near = float(np.mean(np.abs(p_ref - 0.5) < 0.05))
    int8 = med["tflite int8"]["rate"] / keras_rate
    cores = len(os.sched_getaffinity(0))
    steady = {e: _steady(runs[e], bigs[e], n, big, forward[e]["cpu"], cores) for e in ENGINES}
    rows = [(e, forward[e]["cpu"], steady[e]) for e in ENGINES]
    if seg is not None:
        rows.append((f"{SEG}, {seg['size']} px", seg["forward"]["cpu"],
                     _steady(seg["runs"], seg["big"], n, big, seg["forward"]["cpu"], cores)))
    lines += [
        "",
        f"Steady state, what the {big - n} extra images of the {big}-image run cost (start-up "
        "cancelled out): CPU ms per image of the predict process (C), of the engine's forward "
        "alone on preloaded tensors, decode overhead (C - forward) / forward, images/s (P) and "
        f"efficiency P x C / {cores} cores (1 = every core busy the whole time):",
        "",
        "| engine | predict CPU ms/image (C) | forward CPU ms/image | decode overhead | "
        "images/s (P) | x Keras | efficiency P x C / cores |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for name, fwd_cpu, f in rows:
        lines.append(f"| {name} | {1000 * f['cpu']:.1f} | {1000 * fwd_cpu:.1f} | "
                     f"{f['overhead']:.2f} | {f['rate']:.1f} | "
                     f"{f['rate'] / steady['keras']['rate']:.2f} | {f['efficiency']:.2f} |")
    seg_text = ""
    if seg is not None:
        f = rows[-1][2]
        seg_text = (f"; segmenter: decode overhead **{f['overhead']:.2f}**, efficiency "
                    f"**{f['efficiency']:.2f}**")
    lines += [
        "",
        "Targets (issue #15): decode overhead <= 0.80 with the Keras engine: "
        f"**{steady['keras']['overhead']:.2f}**; efficiency >= 0.9: " + ", ".join(
            f"{e} **{steady[e]['efficiency']:.2f}**" for e in ENGINES) +
        f"; TFLite int8 >= 1.7x Keras end to end: **"
        f"{steady['tflite int8']['rate'] / steady['keras']['rate']:.2f}x** steady, "
        f"{int8:.2f}x on predict's own rate for {n} images "
        f"({forward['tflite int8']['rate'] / forward['keras']['rate']:.2f}x forward to forward), "
        f"with >= 98% label agreement: **{agreement['tflite int8']['labels']:.1%}**; memory at "
        f"{big} within 20% of {n}: **{bigs['keras']['rss_mib'] / med['keras']['rss_mib']:.2f}x** "
        f"(Keras), {max(bigs[e]['rss_mib'] / med[e]['rss_mib'] for e in ENGINES):.2f}x worst"
        + seg_text + ".",
        "",
        "Where predict's time goes (in-process `predict()` on the same "
        f"{n} scans, timers around its parts, seconds per image x 1000):",
        "",
        "| part | " + " | ".join(ENGINES) + " |",
        "|---|" + "---:|" * len(ENGINES),
    ]
    parts = [k for k in profiles["keras"] if k not in ("loop", "others_cores")]
    for part in parts + ["loop"]:
        label = "**predict loop, all**" if part == "loop" else part
        lines.append(f"| {label} | " + " | ".join(
            f"{1000 * profiles[e].get(part, 0.0) / n:.1f}" for e in ENGINES) + " |")
    lines.append("| the engine's forward alone (preloaded tensors) | " + " | ".join(
        f"{1000 / forward[e]['rate']:.1f}" for e in ENGINES) + " |")
    side = serial["decode"] + serial["resize"]
    # any design: all CPU work (forward, decode, resize) shared by the cores
    ceiling = {e: cores / (forward[e]["cpu"] + side) for e in ENGINES}
    lines.append("| CPU of the forward alone, core-ms per image | " + " | ".join(
        f"{1000 * forward[e]['cpu']:.1f}" for e in ENGINES) + " |")
    lines += [
        "",
        f"Each step alone, one thread, per image: PNG decode to luminance (`read_luminance`, "
        f"mean {serial['pixels'] / 1e3:.0f} kpixel) {1000 * serial['decode']:.1f} ms; "
        f"resize to {args.img_size} (`predict_rows.resized`, `imaging.resize_grey`, PIL bilinear) "
        f"{1000 * serial['resize']:.1f} ms. CPU ceiling on {cores} cores, any design "
        "(cores / (forward core-ms + decode + resize)): " + ", ".join(
            f"{e} {ceiling[e]:.0f} images/s ({ceiling[e] / forward[e]['rate']:.0%} of its "
            f"forward)" for e in ENGINES) + ".",
        "",
        (f"- Run directory: {shown(run)} (given with --run; {{VAL_AUC}}), its exports "
         "`export/model.tflite` and `export/model-int8.tflite`. " if args.run is not None else
         f"- Run directory: MobileNetV2 from scratch (`breastus train-cls --weights none "
         f"--epochs {args.epochs} --lr {args.lr:g} --bn-momentum {args.bn_momentum:g} "
         f"--monitor val_loss`) on {args.cases} synthetic cases at {args.img_size} px ("
         f"{{VAL_AUC}}), exported with `breastus export RUN --format tflite` (float32) and "
         f"`--quantize int8` (calibrated on 100 training images). ") + "Keras p on the scans: "
        f"{p_ref.min():.3f}-{p_ref.max():.3f}, {np.mean(p_ref >= 0.5):.0%} malignant, "
        f"{near:.0%} within 0.05 of the 0.5 threshold (where int8 noise can flip a label).",
        (f"- Scans: BrEaST-Lesions_USG's own {len(scans)} PNG scans (../shared/data; RGBA "
         "with a tinted overlay, as the archive stores them)" if BREAST in scans[0].parents else
         f"- Scans: {len(scans)} synthetic BrEaST-layout PNGs (`make_synthetic_breast`, "
         "400-800 px, as the archive stores them)") +
        f", cycled under new names to {n} and {big} files.",
        "- Forward on preloaded tensors: Keras = the compiled function predict builds "
        f"(`tf.function`, input_signature [None, S, S, 1]) over tf.constant batches of "
        f"{args.batch_size}; TFLite = `TFLiteModel.predict` (XNNPACK, all cores) over numpy "
        f"batches; median of {args.forward_repeat} passes after a warm one, interleaved.",
        f"- predict: `breastus predict FOLDER --out O --batch-size {args.batch_size} "
        "--overwrite` with `--cls-run RUN` (keras), `--cls-run RUN --engine tflite` (float32), "
        "`--cls-run RUN/export/model-int8.tflite --engine tflite` (int8); median of "
        f"{args.repeat} runs on {n} images (interleaved), one on {big}. \"its own images/s\" = "
        "predictions / seconds from its first decode to its last row (model loading and "
        "TensorFlow import excluded); \"end to end\" = images / process wall time (all "
        f"included); \"marginal\" = ({big} - {n}) / (wall {big} - wall {n}), the rate a long "
        "run approaches. Peak RSS: each predict process's `ru_maxrss` (read by a small "
        "launcher process: a child forked straight from this TensorFlow-holding process would "
        "report this process's RSS as its own floor).",
        f"- TensorFlow {tf.__version__}, CPU only. Other processes' load (from /proc/stat): "
        f"max {max(r['others'] for rs in runs.values() for r in rs):.2f} cores over the "
        f"predict runs on {n}, max {max(b['others'] for b in bigs.values()):.2f} on {big}, "
        f"max {max(f['others'] for f in forward.values()):.2f} over the forward passes.",
    ]
    if args.note:
        lines.append(f"- {args.note}")
    try:
        history = list(csv.DictReader((run / "history.csv").read_text().splitlines()))
        best = max(history, key=lambda row: -float(row["val_loss"]))
        val_auc = f"val AUC {float(best['val_auc']):.2f} at epoch {best['epoch']}, least val loss"
    except (OSError, KeyError, ValueError):
        val_auc = "no history.csv with val_auc"
    lines = [line.replace("{VAL_AUC}", val_auc) for line in lines]
    lines += ["", "Command: `{COMMAND}`."]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
