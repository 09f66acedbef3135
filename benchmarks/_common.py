"""Helpers the benchmark scripts share: machine load, data, and timing epochs on a busy machine."""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
#: the real dataset beside the repository (../shared, as the tests find it)
BREAST = REPO.parent / "shared" / "data" / "BrEaST-Lesions_USG"


def shown(path: str | Path) -> str:
    """``path`` as written into BENCHMARKS.md: relative to the repository, never this machine's
    absolute path (a folder outside it is named by its last part only)."""
    absolute = Path(path).resolve()
    try:
        return os.path.relpath(absolute, REPO) if REPO.parent in absolute.parents else \
            f"<{absolute.name}>"
    except ValueError:
        return f"<{absolute.name}>"

EPOCH_TIME_NOTE = (
    "- Epoch time = from the `fit` call to `on_train_end` (every step and every wait for "
    "data). \"fit teardown wait\" is what `fit` then spent returning (mean over every "
    "epoch run; with tf.data autotuning on, deleting the epoch's iterator waited for the "
    "autotuning thread's next wake-up, which is why `make_dataset` turns autotuning off); it "
    "is left out of the images/s.")


# ---- command line ---------------------------------------------------------------------------
def add_load_options(parser: argparse.ArgumentParser) -> None:
    """--max-foreign, --retries and --max-wait (for ``EpochTimer``)."""
    parser.add_argument("--max-foreign", type=float, default=0.25,
                        help="re-run an epoch while other processes used more than this many "
                             "cores during it (default 0.25; a shared machine)")
    parser.add_argument("--retries", type=int, default=1,
                        help="re-runs per epoch at most (then the quietest try is kept)")
    parser.add_argument("--max-wait", type=float, default=30.0,
                        help="seconds to wait at most, before each epoch, for the machine to "
                             "be that quiet (default 30)")


def command_line(script: str) -> str:
    """``python benchmarks/SCRIPT`` and this run's arguments, less --no-record."""
    args = [a for a in sys.argv[1:] if a != "--no-record"]
    return f"python benchmarks/{script}" + " ".join(
        [""] + [shown(a) if os.path.isabs(a) else a for a in args])


def in_fresh_process(script: str, *args: str) -> tuple[dict | None, str]:
    """Run ``python SCRIPT ARGS...`` in a new process (nothing cached, no global state shared):
    (the JSON object its last stdout line holds, or None when it failed; its stderr)."""
    import json
    import subprocess

    proc = subprocess.run([sys.executable, script, *args], capture_output=True, text=True)
    lines = proc.stdout.strip().splitlines()
    if proc.returncode != 0 or not lines:
        return None, proc.stderr
    return json.loads(lines[-1]), proc.stderr


def rotated(items, shift: int) -> list:
    """``items`` as a list, started ``shift`` places on (round-robin order for round ``shift``)."""
    items = list(items)
    return items[shift % len(items):] + items[:shift % len(items)]


# ---- machine load ---------------------------------------------------------------------------
def busy_seconds() -> float:
    """CPU seconds all processes on this machine have used (``/proc/stat``), 0 if unknown."""
    try:
        with open("/proc/stat") as stat:
            fields = [int(v) for v in stat.readline().split()[1:]]
    except (OSError, ValueError):
        return 0.0
    user, nice, system, _idle, _iowait, irq, softirq, steal = (fields + [0] * 8)[:8]
    return (user + nice + system + irq + softirq + steal) / os.sysconf("SC_CLK_TCK")


def own_cpu_seconds() -> float:
    """CPU seconds this process has used (user + system)."""
    times = os.times()
    return times.user + times.system


class Load:
    """Load from other processes over a block: ``foreign`` CPU seconds (all CPU time less ours
    and ``child``'s, which the block may set) and ``cores`` (that per second of ``t0``-``t1``)."""

    def __enter__(self) -> Load:
        self.busy0, self.own0, self.t0 = busy_seconds(), own_cpu_seconds(), time.perf_counter()
        self.child = 0.0
        return self

    def __exit__(self, *exc: object) -> None:
        self.t1 = time.perf_counter()
        wall = max(self.t1 - self.t0, 1e-9)
        self.foreign = (busy_seconds() - self.busy0) - (own_cpu_seconds() - self.own0) - self.child
        self.cores = max(0.0, self.foreign / wall)


def wait_quiet(max_foreign: float, limit_s: float) -> float:
    """Wait (at most ``limit_s``) until other processes use at most ``max_foreign`` cores over
    a 1 s window; return the seconds waited."""
    start = time.perf_counter()
    while time.perf_counter() - start < limit_s:
        with Load() as load:
            time.sleep(1.0)
        if load.foreign <= max_foreign:
            break
    return time.perf_counter() - start


# ---- data -----------------------------------------------------------------------------------
def prepare_data(tmp: Path, given: Path | None, cases: int = 252) -> tuple[Path, str]:
    """The dataset and a line naming it: ``given`` (prepared) if set, else the real BrEaST
    prepared under ``tmp`` when present, else a synthetic one of ``cases`` cases."""
    if given is not None:
        return given, f"prepared dataset {shown(given)}"
    from breastus_cli.data.prepare import PrepareSettings, prepare

    started = time.perf_counter()
    out = tmp / "data"
    if BREAST.exists():
        prepare(PrepareSettings(source=BREAST, out=out))
        source = f"BrEaST-Lesions_USG (real), prepared from {shown(BREAST)}"
    else:
        from breastus_cli.data.synth import SynthSettings, make_synthetic_breast

        make_synthetic_breast(SynthSettings(tmp / "synth", cases=cases, min_side=400,
                                            max_side=800))
        prepare(PrepareSettings(source=tmp / "synth", out=out))
        source = f"synthetic BrEaST layout (make_synthetic_breast, {cases} cases, 400-800 px)"
    print(f"prepared {out} in {time.perf_counter() - started:.1f} s", flush=True)
    return out, source


def describe_pngs(paths: list[str], what: str, masks: list[str] | tuple = ()) -> str:
    """``N WHAT``, the image sizes and the megabytes of PNG (of the images and ``masks``)."""
    from PIL import Image

    sizes = [Image.open(p).size for p in paths]
    widths, heights = [w for w, _ in sizes], [h for _, h in sizes]
    megabytes = sum(os.path.getsize(p) for p in list(paths) + list(masks)) / 1e6
    return (f"{len(paths)} {what}, {min(widths)}-{max(widths)} x {min(heights)}-{max(heights)} "
            f"px (w x h), {megabytes:.0f} MB of PNG" + (" (images and masks)" if masks else ""))


# ---- training epochs ------------------------------------------------------------------------
def in_memory_dataset(floats: tuple, uint8s: tuple, batch: int, augment=None):
    """The in-memory baseline: the ``floats`` (x, y) shuffled each epoch and batched; with
    ``augment``, the ``uint8s`` (x, y) through the project's ``augment_fn`` instead."""
    from breastus_cli import backend
    from breastus_cli.data.pipeline import augment_fn

    tf = backend.tf()
    n = len(floats[0])
    if augment is None:
        return (tf.data.Dataset.from_tensor_slices(floats)
                .shuffle(n, seed=0, reshuffle_each_iteration=True)
                .batch(batch).prefetch(tf.data.AUTOTUNE))
    seeds = tf.data.Dataset.random(seed=0, rerandomize_each_iteration=True).batch(2)
    apply = augment_fn(augment, tf)
    dataset = tf.data.Dataset.from_tensor_slices(uint8s).shuffle(
        n, seed=0, reshuffle_each_iteration=True)
    return (tf.data.Dataset.zip((dataset, seeds))
            .map(lambda pair, s: apply(pair[0], pair[1], s),
                 num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
            .batch(batch).prefetch(tf.data.AUTOTUNE))


class EpochTimer:
    """One-epoch ``model.fit`` calls of several pipelines (``configs``: name, augment, dataset
    factory), timed on a shared machine: before each epoch it waits (--max-wait) for other
    processes to use at most --max-foreign cores, and re-runs an epoch during which they used
    more (--retries times at most, the quietest try kept). ``width``: the name column of the
    progress lines."""

    def __init__(self, model, configs: list[tuple], args: argparse.Namespace, width: int):
        from breastus_cli import backend

        class _TrainEnd(backend.keras().callbacks.Callback):
            def on_train_end(self, logs=None):
                self.at = time.perf_counter()

        self.model, self.configs, self.args, self.width = model, configs, args, width
        self._train_end = _TrainEnd
        self.datasets: list = [None] * len(configs)
        self.teardowns: list[list[float]] = [[] for _ in configs]
        self.kept_load: list[float] = []
        self.reruns = 0
        self.waited = 0.0

    def epoch(self, dataset) -> tuple[float, float, float]:
        """Seconds of one training epoch (fit call to on_train_end: every step and every wait
        for data), seconds fit then spent returning (tearing the iterator down), and the
        cores other processes used meanwhile."""
        end = self._train_end()
        with Load() as load:
            self.model.fit(dataset, epochs=1, verbose=0, callbacks=[end])
        return end.at - load.t0, load.t1 - end.at, load.cores

    def measure(self, i: int, label: str, *, fresh: bool) -> tuple[float, float]:
        """One epoch of pipeline i (seconds, teardown seconds) from its quietest try; a fresh
        dataset for each try when ``fresh`` (a first epoch)."""
        args = self.args
        name, aug, factory = self.configs[i]
        tries = []
        for attempt in range(args.retries + 1):
            self.waited += wait_quiet(args.max_foreign, args.max_wait)
            if fresh or self.datasets[i] is None:
                self.datasets[i] = factory(aug)
            wall, teardown, foreign = self.epoch(self.datasets[i])
            tries.append((wall, teardown, foreign))
            self.teardowns[i].append(teardown)
            print(f"{label:11s} {name:{self.width}s} aug={aug!s:5s} {wall:7.2f} s + teardown "
                  f"{teardown:5.2f} s (others: {foreign:.2f} cores)", flush=True)
            if foreign <= args.max_foreign:
                break
            self.reruns += attempt < args.retries
        wall, teardown, foreign = min(tries, key=lambda t: t[2])
        self.kept_load.append(foreign)
        return wall, teardown

    def rounds(self, epochs: int) -> tuple[list, list[list]]:
        """Every pipeline's first epoch, then ``epochs`` rounds of one epoch each, round-robin
        with the order rotated each round: (first, steady per pipeline) of ``measure`` results."""
        first = [self.measure(i, "first epoch", fresh=True) for i in range(len(self.configs))]
        steady: list[list[tuple[float, float]]] = [[] for _ in self.configs]
        for round_ in range(epochs):
            for i in rotated(range(len(self.configs)), round_):
                steady[i].append(self.measure(i, f"round {round_ + 1}", fresh=False))
        return first, steady

    def spread(self, seconds: list[list[float]]) -> str:
        """Each pipeline's min-max epoch seconds, e.g. ``tf.data+aug 1.20-1.31``."""
        return "; ".join(f"{self.configs[i][0].split()[0].strip('`')}"
                         f"{'+aug' if self.configs[i][1] else ''} {min(row):.2f}-{max(row):.2f}"
                         for i, row in enumerate(seconds))

    def load_note(self) -> str:
        """The markdown line on the machine's load: waiting, re-runs, others' load kept."""
        args, kept = self.args, self.kept_load
        return ("- Shared machine (others' load read from /proc/stat less this process's CPU "
                f"time): before each epoch the script waited (at most {args.max_wait:g} s) for "
                f"other processes to use at most {args.max_foreign:g} cores ({self.waited:.0f} s "
                f"waited in all), and an epoch during which they used more was re-run (at most "
                f"{args.retries} times, then the quietest try kept): {self.reruns} re-runs; "
                f"others' load over the kept epochs: median {statistics.median(kept):.2f}, max "
                f"{max(kept):.2f} cores.")
