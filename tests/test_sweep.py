"""`breastus sweep` run locally: prefix reuse, resumability, results, plots."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest

from conftest import FAST_CLS, run_cli

GRID = ["--lr", "1e-3,1e-2", "--epochs", "1,2"]


def _plan(folder: Path) -> dict:
    return json.loads((folder / "sweep.json").read_text())


@pytest.fixture(scope="module")
def prefix_sweep(learn_data, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("sweep") / "prefix"
    proc = run_cli("sweep", "cls", str(learn_data), *FAST_CLS, *GRID, "--deterministic",
                   "--out", str(out))
    assert proc.returncode == 0, proc.stderr
    return out


def test_every_grid_point_from_one_training_per_learning_rate(prefix_sweep):
    results = pd.read_csv(prefix_sweep / "results.csv")
    assert sorted(zip(results["lr"], results["epochs"])) == [(1e-3, 1), (1e-3, 2), (1e-2, 1),
                                                              (1e-2, 2)]
    assert {"val_auc", "val_accuracy", "val_loss", "train_seconds", "run_dir", "model"} <= set(
        results.columns)
    assert all(Path(m).is_file() for m in results["model"])  # a model at every grid epoch
    plan = _plan(prefix_sweep)
    assert plan["trainings"] == 2 and plan["trainings_this_run"] == 2
    best = json.loads((prefix_sweep / "best.json").read_text())
    assert best["val_auc"] == pytest.approx(results["val_auc"].max())
    for name in ("grid.png", "heatmap.png"):
        assert (prefix_sweep / name).stat().st_size > 1000


def test_prefix_points_equal_independent_runs(prefix_sweep, learn_data, tmp_path):
    out = tmp_path / "independent"
    proc = run_cli("sweep", "cls", str(learn_data), *FAST_CLS, "--lr", "1e-3", "--epochs", "1,2",
                   "--deterministic", "--independent", "--out", str(out))
    assert proc.returncode == 0, proc.stderr
    assert _plan(out)["trainings"] == 2  # one per grid point
    prefix = pd.read_csv(prefix_sweep / "results.csv")
    independent = pd.read_csv(out / "results.csv")
    for epochs in (1, 2):
        a = prefix[(prefix["lr"] == 1e-3) & (prefix["epochs"] == epochs)].iloc[0]
        b = independent[independent["epochs"] == epochs].iloc[0]
        assert a["val_loss"] == pytest.approx(b["val_loss"], rel=1e-5, abs=1e-6)
        assert a["val_auc"] == pytest.approx(b["val_auc"], abs=1e-6)


def test_rerun_does_nothing_new(prefix_sweep, learn_data):
    before = pd.read_csv(prefix_sweep / "results.csv")
    proc = run_cli("sweep", "cls", str(learn_data), *FAST_CLS, *GRID, "--deterministic",
                   "--out", str(prefix_sweep))
    assert proc.returncode == 0, proc.stderr
    assert _plan(prefix_sweep)["trainings_this_run"] == 0
    assert pd.read_csv(prefix_sweep / "results.csv").equals(before)


def test_a_different_sweep_in_the_same_folder_is_refused(prefix_sweep, learn_data):
    proc = run_cli("sweep", "cls", str(learn_data), *FAST_CLS, "--lr", "1e-4", "--epochs", "1",
                   "--out", str(prefix_sweep))
    assert proc.returncode == 2 and "different sweep" in proc.stderr


def test_killed_sweep_resumes_and_finishes(learn_data, tmp_path):
    out = tmp_path / "killed"
    args = [sys.executable, "-m", "breastus_cli", "sweep", "cls", str(learn_data), *FAST_CLS,
            "--lr", "1e-3,1e-2", "--epochs", "2", "--out", str(out)]
    proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)
    first = out / "trials" / "lr-0.001" / "config.json"
    deadline = time.time() + 300
    while time.time() < deadline and proc.poll() is None:
        if first.is_file() and json.loads(first.read_text()).get("status") == "finished":
            break
        time.sleep(0.05)
    assert proc.poll() is None, "the sweep ended before it could be killed"
    os.killpg(proc.pid, signal.SIGKILL)  # the sweep and its running trial
    proc.wait()
    resumed = run_cli("sweep", "cls", str(learn_data), *FAST_CLS, "--lr", "1e-3,1e-2",
                      "--epochs", "2", "--out", str(out))
    assert resumed.returncode == 0, resumed.stderr
    plan = _plan(out)
    assert plan["trainings_this_run"] == 1 and plan["trainings_finished"] == 2
    assert len(pd.read_csv(out / "results.csv")) == 2


def test_collect_lists_missing_points_and_bad_options_exit_2(learn_data, tmp_path):
    out = tmp_path / "planned"
    proc = run_cli("sweep", "cls", str(learn_data), *FAST_CLS, *GRID, "--out", str(out),
                   "--slurm", "--dry-run")
    assert proc.returncode == 0, proc.stderr
    assert (out / "sweep.sbatch").is_file()
    proc = run_cli("sweep", "collect", str(out))
    assert proc.returncode == 1 and "no finished trial" in proc.stderr
    for args, message in ((["--lr", "fast"], "--lr takes"),
                          (["--early-stopping", "3"], "--independent"),
                          (["--img-size", "100"], "--img-size"),
                          (["--jobs", "0"], "--jobs")):
        proc = run_cli("sweep", "cls", str(learn_data), *FAST_CLS, "--epochs", "1", *args,
                       "--out", str(tmp_path / "x"))
        assert proc.returncode == 2 and message in proc.stderr, (args, proc.stderr)


def test_two_jobs_in_parallel(learn_data, tmp_path):
    out = tmp_path / "jobs"
    proc = run_cli("sweep", "cls", str(learn_data), *FAST_CLS, "--lr", "1e-3,1e-2",
                   "--epochs", "1", "--jobs", "2", "--out", str(out))
    assert proc.returncode == 0, proc.stderr
    assert len(pd.read_csv(out / "results.csv")) == 2
    assert sorted(p.name for p in (out / "logs").iterdir()) == ["lr-0.001.log", "lr-0.01.log"]
