"""``breastus sweep``: the learning-rate x epochs grid, resumable, local or as a Slurm array.

Epoch values are prefixes of one training per learning rate: each learning rate is trained
once to the largest epoch count, and the validation metric (from history.csv) and a model
(``--checkpoint-epochs``) are recorded at every grid epoch; the reference study's 35 points
cost 7 trainings. ``--independent`` trains every point from scratch.

    SWEEP/sweep.json      the plan (task, data, settings, grid, trials) and counters
    SWEEP/trials/<name>/  one run directory per training (resumable like any run)
    SWEEP/cache/          decoded images, made once and read by every trial
    SWEEP/results.csv     one row per grid point; best.json (grid.png and heatmap.png come from
                          the reports layer: breastus_cli.reports.sweep)
    SWEEP/sweep.sbatch    with --slurm: the array job (one task per trial)
"""

from __future__ import annotations

import math
import os
import signal
import subprocess
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from breastus_cli.atomic import atomic_path, write_json
from breastus_cli.data.split import select_cases
from breastus_cli.engine.orchestration.plan import (
    PlanKind, open_plan, part_command, part_state, read_own_plan, submit_parts, train_part,
)
from breastus_cli.engine.orchestration.slurm import SlurmOptions
from breastus_cli.engine.runs.rundir import GRID, HISTORY, log
from breastus_cli.engine.runs.settings import (
    PAPER_EPOCHS, PAPER_LRS, SETTINGS_TYPES, TRAIN_ADDED, TrainSettings, added_settings,
)
from breastus_cli.errors import UsageError, WorkError
from breastus_cli.runfiles import read_sweep

PLAN = "sweep.json"
RESULTS = "results.csv"


@dataclass
class SweepSettings:
    """Settings of ``breastus sweep cls|seg``."""

    task: str
    train: TrainSettings
    out: Path
    lrs: tuple[float, ...] = PAPER_LRS
    epochs: tuple[int, ...] = PAPER_EPOCHS
    independent: bool = False
    jobs: int = 1
    slurm: SlurmOptions | None = None

    def validate(self) -> None:
        if self.task not in SETTINGS_TYPES:
            raise UsageError(f"sweep task must be cls or seg (got '{self.task}')")
        if not self.lrs or any(not (math.isfinite(lr) and lr > 0) for lr in self.lrs):
            raise UsageError("--lr takes positive learning rates, e.g. --lr 1e-4,1e-3")
        if not self.epochs or any(e < 1 for e in self.epochs):
            raise UsageError("--epochs takes positive epoch counts, e.g. --epochs 10,20")
        if len(set(self.lrs)) != len(self.lrs) or len(set(self.epochs)) != len(self.epochs):
            raise UsageError("--lr and --epochs values must not repeat")
        if self.jobs < 1:
            raise UsageError(f"--jobs must be at least 1 (got {self.jobs})")
        if self.train.early_stopping and not self.independent:
            raise UsageError("--early-stopping would cut the prefix trainings short: use it "
                             "with --independent only")
        if (self.train.lr_schedule != "constant" or self.train.warmup_epochs) \
                and not self.independent:
            raise UsageError("--lr-schedule/--warmup-epochs depend on the epoch count: a shorter "
                             "grid point is not a prefix of a longer training; use them with "
                             "--independent")
        if self.train.run_dir is not None:
            raise UsageError("a sweep's trials have their own run directories: drop --run-dir")
        probe = SETTINGS_TYPES[self.task].from_dict(self.train.to_dict())
        probe.epochs, probe.lr = max(self.epochs), self.lrs[0]
        probe.validate()


@dataclass
class SweepResult:
    """What a sweep run (or collect) found."""

    out: Path
    rows: list[dict[str, Any]]
    best: dict[str, Any] | None
    metric: str
    mode: str
    trainings: int
    trainings_this_run: int
    missing: list[str]
    seconds: float
    submitted_job: str | None = None
    sbatch: Path | None = None


def _name(lr: float, epochs: int | None) -> str:
    text = f"lr-{lr:g}"
    return text + (f"-ep-{epochs}" if epochs is not None else "")


def make_plan(settings: SweepSettings) -> dict[str, Any]:
    """The trials: one per learning rate (prefixes) or one per grid point (--independent)."""
    epochs = sorted(settings.epochs)
    trials = []
    for lr in settings.lrs:
        if settings.independent:
            trials += [{"lr": lr, "epochs": e, "grid_epochs": [e], "name": _name(lr, e)}
                       for e in epochs]
        else:
            trials.append({"lr": lr, "epochs": epochs[-1], "grid_epochs": epochs,
                           "name": _name(lr, None)})
    for index, trial in enumerate(trials):
        trial["index"] = index
    train = settings.train.to_dict()
    train.update({"run_dir": None, "cache": "disk" if settings.train.cache != "none" else "none",
                  "cache_dir": str((settings.out / "cache").resolve())})
    return {"task": settings.task, "data": str(Path(settings.train.data).resolve()),
            "lrs": list(settings.lrs), "epochs": epochs, "independent": settings.independent,
            "train": train, "trials": trials, "trainings": len(trials)}


#: what of sweep.json must match to resume a sweep (its trials' settings but the cache folder)
PLAN_KEYS = ("task", "data", "lrs", "epochs", "independent", "trials")


def _comparable(plan: dict[str, Any]) -> dict[str, Any]:
    """What of sweep.json must match to resume: the grid and the trials' settings (filled with
    the settings added since an older sweep was written; the cache folder may move)."""
    # a sweep written before those settings
    train = {**added_settings(plan.get("task")), **plan.get("train", {})}
    train.pop("cache_dir", None)
    return {**{key: plan.get(key) for key in PLAN_KEYS}, "train": train}


#: the sweep folder (engine/orchestration/plan.py)
SWEEP_FOLDER = PlanKind(name="sweep", part="trial", file=PLAN, what="sweep",
                        hint="choose another --out, or repeat the first sweep's options to "
                             "finish it", read=read_sweep, comparable=_comparable)


def trial_settings(plan: dict[str, Any], trial: dict[str, Any], out: Path) -> TrainSettings:
    settings = SETTINGS_TYPES[plan["task"]].from_dict({**TRAIN_ADDED, **plan["train"]})
    settings.lr, settings.epochs = float(trial["lr"]), int(trial["epochs"])
    settings.run_dir = Path(out).resolve() / "trials" / trial["name"]
    settings.checkpoint_epochs = list(trial["grid_epochs"])
    return settings


def run_trial(out: Path, index: int) -> str:
    """Run, resume or skip one trial (what each local job or Slurm array task does)."""
    plan = read_own_plan(SWEEP_FOLDER, out)
    if not 0 <= index < len(plan["trials"]):
        raise UsageError(f"--index must lie in 0..{len(plan['trials']) - 1} (got {index})")
    trial = plan["trials"][index]
    if not train_part(trial_settings(plan, trial, Path(out)), plan["task"]):
        log.info("trial %s finished already", trial["name"])
        return "skipped"
    return "trained"


def warm_cache(plan: dict[str, Any], out: Path) -> None:
    """Decode the sweep's images once into SWEEP/cache, before the trials read them."""
    from breastus_cli.engine.training import tasks  # lazy: imports TensorFlow

    if plan["train"].get("cache") != "disk":
        return
    settings = trial_settings(plan, plan["trials"][0], out)
    task = tasks.task_for(plan["task"])
    settings.run_dir = out  # united 'other' masks land in SWEEP/ when asked for
    Path(settings.cache_dir).mkdir(parents=True, exist_ok=True)
    for role in ("train", "val"):
        target = Path(settings.cache_dir) / role
        if Path(f"{target}.index").is_file():
            continue
        frame = task.usable(select_cases(settings.data, role, fold=settings.fold,
                                         seed=settings.seed, val_fraction=settings.val_fraction))
        dataset = task.dataset(frame, settings, training=False, cache=str(target))
        for _ in dataset:  # one pass writes the cache files
            pass
    log.info("decoded images cached in %s", settings.cache_dir)


def _trial_command(out: Path, index: int) -> list[str]:
    return [*part_command(SWEEP_FOLDER, out), str(index)]


def run_local(settings: SweepSettings, plan: dict[str, Any]) -> int:
    """Run the unfinished trials here, ``jobs`` at a time, each in its own process."""
    todo = [t for t in plan["trials"]
            if part_state(settings.out / "trials" / t["name"]) != "finished"]
    if not todo:
        return 0
    warm_cache(plan, settings.out)
    cores = os.cpu_count() or 1
    env = dict(os.environ)
    env["BREASTUS_THREADS"] = str(max(1, cores // settings.jobs))
    logs = settings.out / "logs"
    logs.mkdir(exist_ok=True)

    children = _Children()

    def launch(trial: dict[str, Any]) -> tuple[str, int]:
        log.info("trial %d/%d: lr %g, %d epochs", trial["index"] + 1, len(plan["trials"]),
                 trial["lr"], trial["epochs"])
        with open(logs / f"{trial['name']}.log", "a") as fh:
            proc = children.start(_trial_command(settings.out, trial["index"]), env=env,
                                  stdout=fh, stderr=subprocess.STDOUT)
            code = -1 if proc is None else proc.wait()
        return trial["name"], code

    pool = ThreadPoolExecutor(max_workers=settings.jobs)
    try:
        outcomes = list(pool.map(launch, todo))
    except BaseException:  # interrupted (SIGTERM/SIGINT): the trials stop with this process
        children.stop()
        pool.shutdown(wait=True, cancel_futures=True)
        raise
    pool.shutdown(wait=True)
    failed = [name for name, code in outcomes if code != 0]
    if failed:
        raise WorkError(f"{len(failed)} trial(s) failed: {', '.join(failed)}; see "
                        f"{logs}/<trial>.log (rerun the same command to retry them)")
    return len(todo)


class _Children:
    """The trial processes started here; ``stop`` ends them and refuses new ones."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._procs: list[subprocess.Popen] = []
        self._stopping = False

    def start(self, command: list[str], **kwargs: Any) -> subprocess.Popen | None:
        with self._lock:
            if self._stopping:
                return None
            proc = subprocess.Popen(command, **kwargs)
            self._procs.append(proc)
            return proc

    def stop(self, grace: float = 60.0) -> None:
        """SIGTERM to every running trial (each marks its run interrupted), SIGKILL after
        ``grace`` seconds."""
        with self._lock:
            self._stopping = True
            procs = list(self._procs)
        for proc in procs:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + grace
        for proc in procs:
            try:
                proc.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def sweep(settings: SweepSettings) -> SweepResult:
    """Plan, then run locally (resuming) or write/submit the Slurm array; collect at the end."""
    settings.validate()
    start = time.perf_counter()
    plan = open_plan(SWEEP_FOLDER, settings.out, make_plan(settings))
    if settings.slurm is not None:
        warm_cache(plan, settings.out)
        path, job = submit_parts(SWEEP_FOLDER, settings.out, len(plan["trials"]), settings.slurm)
        if job:
            plan.setdefault("slurm_jobs", []).append(job)
            write_json(settings.out / PLAN, plan)
        result = collect(settings.out, trainings_this_run=0, allow_empty=True)
        result.submitted_job, result.sbatch = job, path
        return result
    ran = run_local(settings, plan)
    result = collect(settings.out, trainings_this_run=ran)
    result.seconds = round(time.perf_counter() - start, 2)
    return result


def _metric(plan: dict[str, Any]) -> tuple[str, str]:
    monitor = plan["train"]["monitor"]
    return monitor, "min" if monitor.endswith("loss") else "max"


def collect(out: Path, trainings_this_run: int = 0, allow_empty: bool = False) -> SweepResult:
    """Build results.csv, best.json and the plots from whatever trials finished."""
    import pandas as pd

    start = time.perf_counter()
    plan = read_own_plan(SWEEP_FOLDER, out)
    out = Path(out).resolve()  # the same paths in results.csv however the folder was typed
    metric, mode = _metric(plan)
    rows: list[dict[str, Any]] = []
    missing: list[str] = []
    for trial in plan["trials"]:
        run = out / "trials" / trial["name"]
        history = run / HISTORY
        frame = pd.read_csv(history) if history.is_file() else None
        for epochs in trial["grid_epochs"]:
            if frame is None or epochs not in set(frame["epoch"]):
                missing.append(f"lr {trial['lr']:g} x {epochs} epochs")
                continue
            at = frame[frame["epoch"] == epochs].iloc[0]
            row: dict[str, Any] = {"lr": trial["lr"], "epochs": epochs}
            row.update({c: float(at[c]) for c in frame.columns if c.startswith("val_")})
            row["train_seconds"] = round(float(frame.loc[frame["epoch"] <= epochs,
                                                         "seconds"].sum()), 2)
            row["run_dir"] = str(run)
            model = run / GRID / f"epoch-{epochs:03d}.keras"
            row["model"] = str(model) if model.is_file() else ""
            rows.append(row)
    rows.sort(key=lambda r: (r["lr"], r["epochs"]))
    best = None
    scored = [r for r in rows if metric in r and r[metric] == r[metric]]
    if scored:
        pick = max if mode == "max" else min
        best = pick(scored, key=lambda r: r[metric])
        best = {**best, "metric": metric, "mode": mode}
    if not rows and not allow_empty:
        raise WorkError(f"no finished trial in {out}: nothing to collect")
    if rows:
        with atomic_path(out / RESULTS) as tmp:
            pd.DataFrame(rows).to_csv(tmp, index=False)
        write_json(out / "best.json", best)
    finished = sum(1 for t in plan["trials"] if part_state(out / "trials" / t["name"])
                   == "finished")
    plan_update = {"trainings": plan["trainings"], "trainings_finished": finished,
                   "trainings_this_run": trainings_this_run, "grid_points": len(rows),
                   "missing": missing, "metric": metric, "mode": mode,
                   "collected": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
    plan.update(plan_update)
    write_json(out / PLAN, plan)
    return SweepResult(out=out, rows=rows, best=best, metric=metric, mode=mode,
                       trainings=plan["trainings"], trainings_this_run=trainings_this_run,
                       missing=missing, seconds=round(time.perf_counter() - start, 2))
