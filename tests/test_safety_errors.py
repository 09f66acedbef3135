"""One clear line for every failure, and no half-made leftovers (issue 11).

Training on deleted files, resuming a damaged run, a validation failure after the run folder
was made, SIGTERM/SIGINT during prepare, sweep and cv, one-class or empty splits, duplicate
CaseIDs, and the resume message against the epochs really run. Tiny data (smallcnn, 32 px).
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
from conftest import breast_row, make_dataset, write_breast

from breastus_cli.errors import InputError, Interrupted

TINY = ["--model", "smallcnn", "--weights", "none", "--img-size", "32", "--batch-size", "8",
        "--cache", "none"]


def cli(*args: str) -> tuple[int, str, str]:
    """``breastus ARGS`` in this process: (exit code, stdout, stderr)."""
    from breastus_cli.cli.app import main
    from breastus_cli.reports import console

    out, err = io.StringIO(), io.StringIO()
    code = 0
    saved = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            try:
                main([str(a) for a in args])
            except SystemExit as exc:
                code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    finally:
        for sig, handler in saved.items():
            signal.signal(sig, handler)
        console.state.quiet = console.state.verbose = console.state.debug = False
    return code, out.getvalue(), err.getvalue()


def error_lines(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if line.startswith("error:")]


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> Path:
    """30 small synthetic cases, prepared and split with 2 folds (read-only: copy it)."""
    return make_dataset(tmp_path_factory.mktemp("tiny"), cases=30, seed=5, sides=(40, 56),
                        ratio=(0.6, 0.2, 0.2), split_seed=1, folds=2)


def _exe() -> list[str]:
    exe = Path(sys.executable).with_name("breastus")
    return [str(exe)] if exe.exists() else [sys.executable, "-m", "breastus_cli"]


def _children(pid: int) -> list[int]:
    """Live (non-zombie) processes whose parent is ``pid`` (read from /proc)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        fields = stat.rsplit(")", 1)[1].split()
        if int(fields[1]) == pid and fields[0] != "Z":
            found.append(int(entry.name))
    return found


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def _wait_for(condition, proc: subprocess.Popen, seconds: float = 300) -> None:
    deadline = time.time() + seconds
    while time.time() < deadline and proc.poll() is None:
        if condition():
            return
        time.sleep(0.02)
    out, err = proc.communicate(timeout=60) if proc.poll() is not None else ("", "")
    pytest.fail(f"condition not reached (rc {proc.returncode}): {err[-2000:]}")


# ---- training on files that are gone --------------------------------------------------------
def test_training_after_the_images_were_deleted_is_one_line_exit_2_and_no_run(tiny, tmp_path):
    data = tmp_path / "data"
    shutil.copytree(tiny, data)
    shutil.rmtree(data / "seg" / "images")
    shutil.rmtree(data / "cls")
    run = tmp_path / "run"
    code, _, err = cli("train-cls", data, *TINY, "--epochs", "1", "--run-dir", run)
    assert code == 2, err
    lines = error_lines(err)
    assert len(lines) == 1 and "internal error" not in err and "Graph execution" not in err
    assert "missing" in lines[0] and str(data / "seg" / "images") in lines[0]
    assert not run.exists()  # nothing half-made


def test_files_deleted_while_training_mark_the_run_failed_with_the_file(tiny, tmp_path,
                                                                      monkeypatch):
    from breastus_cli.engine.training import train as train_module

    data = tmp_path / "data"
    shutil.copytree(tiny, data)
    real_write = train_module.write_config

    def write_then_delete(run_dir, config):  # the files vanish once the run has started
        real_write(run_dir, config)
        shutil.rmtree(data / "seg" / "images", ignore_errors=True)
        shutil.rmtree(data / "cls", ignore_errors=True)

    monkeypatch.setattr(train_module, "write_config", write_then_delete)
    run = tmp_path / "run"
    code, _, err = cli("train-cls", data, *TINY, "--epochs", "1", "--run-dir", run)
    assert code == 2, err
    lines = error_lines(err)
    assert len(lines) == 1 and "internal error" not in err, err
    assert "Graph execution" not in err and "[[" not in err
    assert "not found" in lines[0] and str(data / "seg" / "images") in lines[0]
    config = json.loads((run / "config.json").read_text())
    assert config["status"].startswith("failed") and "not found" in config["status"]


# ---- resume on a damaged run folder --------------------------------------------------------
@pytest.mark.parametrize("content", [
    '{"task": "cls"',                                     # cut off
    "[1, 2]",                                             # not an object
    '{"task": "cls"}',                                    # no settings
    '{"task": "cls", "settings": [1]}',                   # settings not an object
    '{"task": "cls", "settings": {"data": "d", "epochs": "x"}}',  # unusable values
    '{"task": "seg", "settings": {"data": "d"}}',         # another task's run
])
def test_resume_on_a_malformed_config_is_one_line_naming_the_file(tmp_path, content):
    run = tmp_path / "run"
    run.mkdir()
    (run / "config.json").write_text(content)
    code, _, err = cli("train-cls", "--resume", run)
    assert code == 2, err
    lines = error_lines(err)
    assert len(lines) == 1 and "internal error" not in err, err
    assert str(run / "config.json") in lines[0]


# ---- a validation failure after the run folder was made ------------------------------------
def test_a_failure_before_training_starts_leaves_no_run_folder(tiny, tmp_path):
    from breastus_cli import backend

    keras = backend.keras()
    plain = keras.Sequential([keras.Input((4,)), keras.layers.Dense(2)])
    weights = tmp_path / "plain.keras"
    plain.save(weights)  # a model without the 'backbone' layer --weights copies from
    run = tmp_path / "run"
    for _ in range(2):  # the same --run-dir again: the same error, not "exists and is not empty"
        code, _, err = cli("train-cls", tiny, *TINY[:2], "--weights", weights, *TINY[4:],
                           "--epochs", "1", "--run-dir", run)
        assert code == 2, err
        assert "backbone" in error_lines(err)[0] and "not empty" not in err
        assert not run.exists()
    # a folder the user made (empty) stays, and stays empty
    run.mkdir()
    code, _, err = cli("train-cls", tiny, *TINY[:2], "--weights", weights, *TINY[4:],
                       "--epochs", "1", "--run-dir", run)
    assert code == 2 and run.is_dir() and not any(run.iterdir())


# ---- resume message and epochs ----------------------------------------------------------------
def test_resume_message_names_the_epoch_training_really_continues_after(tiny, tmp_path,
                                                                      monkeypatch, caplog):
    """Killed after epoch 2's history row but before its BackupAndRestore state: the resumed
    run says it continues after epoch 1 and runs epochs 2 and 3, each once in history.csv."""
    import logging

    from breastus_cli import backend

    keras = backend.keras()
    backup_end = keras.callbacks.BackupAndRestore.on_epoch_end

    def killed_in_epoch_2(self, epoch, logs=None):
        if epoch == 1:
            raise Interrupted(signal.SIGTERM)  # after epoch 2's history row, before its backup
        backup_end(self, epoch, logs)

    monkeypatch.setattr(keras.callbacks.BackupAndRestore, "on_epoch_end", killed_in_epoch_2)
    run = tmp_path / "run"
    code, _, err = cli("train-cls", tiny, *TINY, "--epochs", "3", "--run-dir", run)
    assert code == 143 and "interrupted" in error_lines(err)[0], err
    assert json.loads((run / "config.json").read_text())["status"] == "interrupted"
    assert pd.read_csv(run / "history.csv")["epoch"].tolist() == [1, 2]
    monkeypatch.setattr(keras.callbacks.BackupAndRestore, "on_epoch_end", backup_end)

    with caplog.at_level(logging.INFO, logger="breastus"):
        code, out, err = cli("train-cls", "--resume", run)
    assert code == 0, err
    said = [r.getMessage() for r in caplog.records if "resuming" in r.getMessage()]
    assert said and f"resuming {run} after epoch 1 of 3" in said[0], said
    history = pd.read_csv(run / "history.csv")
    assert history["epoch"].tolist() == [1, 2, 3]
    config = json.loads((run / "config.json").read_text())
    assert config["status"] == "finished" and config["result"]["epochs_run"] == 3


# ---- signals ---------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def big_source(tmp_path_factory) -> Path:
    """Enough cases that prepare runs for a while (the signal lands mid-way)."""
    from breastus_cli.data.synth import SynthSettings, make_synthetic_breast

    src = tmp_path_factory.mktemp("big") / "src"
    make_synthetic_breast(SynthSettings(out=src, cases=80, seed=2, min_side=160, max_side=256))
    return src


@pytest.mark.parametrize("sig, code", [(signal.SIGTERM, 143), (signal.SIGINT, 130)])
def test_a_signal_during_prepare_says_interrupted_and_leaves_no_temp_folder(
        big_source, tmp_path, sig, code):
    out = tmp_path / "data"
    proc = subprocess.Popen([*_exe(), "prepare", str(big_source), "--out", str(out)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    _wait_for(lambda: any(p.name.startswith(".data.tmp-") and any(p.rglob("*.png"))
                          for p in tmp_path.iterdir()), proc)
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == code, err
    assert "interrupted" in err and "Traceback" not in err
    assert [p.name for p in tmp_path.iterdir()] == []  # neither OUT nor .OUT.tmp-*


def test_sigterm_to_sweep_stops_its_child_trainings(tiny, tmp_path):
    out = tmp_path / "sweep"
    proc = subprocess.Popen([*_exe(), "sweep", "cls", str(tiny), *TINY, "--lr", "1e-3",
                             "--epochs", "200", "--out", str(out)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    # a trial has begun training (its history exists), so the child is well under way
    _wait_for(lambda: any((out / "trials").glob("*/history.csv")) if (out / "trials").is_dir()
              else False, proc)
    children = _children(proc.pid)
    assert children
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=180)
    assert proc.returncode == 143, err
    assert "interrupted" in err and "Traceback" not in err
    assert not [pid for pid in children if _alive(pid)]
    statuses = [json.loads(p.read_text()).get("status")
                for p in (out / "trials").glob("*/config.json")]
    assert statuses and "running" not in statuses and "finished" not in statuses


def test_sigterm_to_cv_stops_the_training_and_marks_the_fold_interrupted(tiny, tmp_path):
    out = tmp_path / "cv"
    proc = subprocess.Popen([*_exe(), "cv", "cls", str(tiny), *TINY, "--epochs", "200",
                             "--lr", "1e-3", "--folds", "2", "--out", str(out)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    _wait_for(lambda: (out / "fold-0" / "history.csv").is_file(), proc)
    before = _children(proc.pid)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=180)
    assert proc.returncode == 143, err
    assert "interrupted" in err and "Traceback" not in err
    assert not [pid for pid in before if _alive(pid)]
    assert json.loads((out / "fold-0" / "config.json").read_text())["status"] == "interrupted"


# ---- splits that cannot train -------------------------------------------------------------
def _manifest(path: Path, counts: dict[str, int]) -> Path:
    rows = [{"case_id": f"{label[0]}{i:03d}", "patient_id": f"{label[0]}{i:03d}",
             "image": f"cls/{label}/{label[0]}{i:03d}.png", "mask": "", "label": label}
            for label, n in counts.items() for i in range(n)]
    path.mkdir(parents=True, exist_ok=True)
    pd.DataFrame(rows).to_csv(path / "manifest.csv", index=False)
    return path


def test_split_of_one_class_is_refused_naming_the_counts(tmp_path):
    data = _manifest(tmp_path / "d", {"benign": 30})
    code, _, err = cli("split", data)
    assert code == 2, err
    line = error_lines(err)[0]
    assert "one class" in line and "benign 30" in line and "malignant 0" in line
    assert not (data / "splits.csv").exists()


def test_split_leaving_val_or_a_class_of_val_empty_warns_clearly(tmp_path):
    data = _manifest(tmp_path / "d", {"benign": 3, "malignant": 2})
    code, _, err = cli("split", data)
    assert code == 0, err
    warning = " ".join(err.split())
    assert "warning: val holds no case (benign 3, malignant 2 cases in all" in warning
    assert "training needs it" in warning
    data = _manifest(tmp_path / "e", {"benign": 40, "malignant": 4})
    code, _, err = cli("split", data)
    assert code == 0 and "warning: val holds no malignant case (malignant: 4" in " ".join(
        err.split())
    # no test share asked for: an empty test split is what the user wants, no warning
    data = _manifest(tmp_path / "f", {"benign": 40, "malignant": 20})
    code, _, err = cli("split", data, "--ratio", "0.8", "0.2", "0")
    assert code == 0 and "warning" not in err
    assert set(pd.read_csv(data / "splits.csv")["split"]) == {"train", "val"}


def test_training_on_a_split_without_a_class_in_val_is_one_line_before_any_run(tmp_path):
    data = _manifest(tmp_path / "d", {"benign": 40, "malignant": 4})
    cli("split", data)
    run = tmp_path / "run"
    code, _, err = cli("train-cls", data, *TINY, "--epochs", "1", "--run-dir", run)
    assert code == 2, err
    line = error_lines(err)[0]
    assert "validation cases" in line and "one class only (benign" in line
    assert not run.exists()


# ---- duplicate case ids ------------------------------------------------------------------------
def test_duplicate_caseids_in_the_workbook_exit_2_naming_them(tmp_path):
    rows = [breast_row(1, "normal"), breast_row(2, "benign"),
            breast_row(1, "malignant", Image_filename="case001b.png",
                       Mask_tumor_filename="case001b_tumor.png"),
            breast_row(3, "benign")]
    source = write_breast(tmp_path / "src", rows)
    code, _, err = cli("prepare", source, "--out", tmp_path / "data")
    assert code == 2, err
    line = error_lines(err)[0]
    assert "duplicate CaseID" in line and "1 (rows 2, 4)" in line
    assert not (tmp_path / "data").exists()


def test_busbra_id_listed_twice_with_two_classes_is_refused(tmp_path):
    from test_sources import BUSBRA_HEADER, _busbra_row, _make_busbra, _write_csv

    from breastus_cli.data.sources import busbra

    root = _make_busbra(tmp_path / "BUSBRA")
    _write_csv(root / "bus_data.csv", BUSBRA_HEADER,
               [_busbra_row("bus_0001-l", 1, "benign"), _busbra_row("bus_0002-s", 2, "malignant"),
                _busbra_row("bus_0001-l", 1, "malignant")])
    with pytest.raises(InputError, match=r"bus_0001-l is listed twice .*benign, malignant"):
        busbra.read(root)


def test_a_signal_inside_a_folder_swap_waits_for_the_swap_to_finish(tmp_path):
    """prepare/split replace a folder by removing it, then renaming the new one: a signal in
    between would leave neither; it is raised once the swap is done."""
    from breastus_cli import atomic
    from breastus_cli.cli.app import _install_signal_handlers, _restore_signal_handlers

    old, new = tmp_path / "out", tmp_path / ".out.tmp"
    old.mkdir()
    new.mkdir()
    (new / "manifest.csv").write_text("new")
    previous = _install_signal_handlers()
    try:
        with pytest.raises(Interrupted) as raised:
            with atomic.uninterrupted():
                shutil.rmtree(old)
                os.kill(os.getpid(), signal.SIGTERM)
                time.sleep(0.05)  # the handler runs here, and must not raise yet
                os.replace(new, old)
        assert raised.value.signum == signal.SIGTERM
    finally:
        _restore_signal_handlers(previous)
    assert (old / "manifest.csv").read_text() == "new"
