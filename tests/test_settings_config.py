"""One owner for every default (the settings dataclasses) and ``--config FILE``.

The CLI tests capture the settings object a command builds instead of training: the command
body hands it to ``train_cmds.run_training`` (or ``engine.sweep.sweep``), patched here.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from conftest import run_cli

from breastus_cli.engine.runs.settings import ClsSettings, SegSettings, read_config_file
from breastus_cli.errors import UsageError


@pytest.fixture
def captured(monkeypatch) -> list:
    """Settings handed to the training engine by train-cls/train-seg (nothing trains)."""
    from breastus_cli.cli import (
        app,  # noqa: F401  (registers every command first)
        train_cmds,
    )

    seen: list = []
    monkeypatch.setattr(train_cmds, "run_training",
                        lambda settings, kind, resume: seen.append((settings, kind, resume)))
    return seen


def _toml(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


@pytest.mark.parametrize("settings_type,weights,lr,epochs", [
    (ClsSettings, "none", 1e-3, 40), (ClsSettings, "imagenet", 1e-4, 20),
    (SegSettings, "none", 1e-3, 30), (SegSettings, "imagenet", 0.005, 20)])
def test_policy_applies_from_python_as_from_the_cli(settings_type, weights, lr, epochs,
                                                    captured, tmp_path):
    settings = settings_type(data=tmp_path, weights=weights)
    assert (settings.lr, settings.epochs) == (lr, epochs)
    explicit = settings_type(data=tmp_path, weights=weights, lr=0.02, epochs=3)
    assert (explicit.lr, explicit.epochs) == (0.02, 3)
    command = "train-cls" if settings_type is ClsSettings else "train-seg"
    proc = run_cli(command, str(tmp_path), "--weights", weights)
    assert proc.returncode == 0, proc.stderr
    built = captured[-1][0]
    assert type(built) is settings_type and (built.lr, built.epochs) == (lr, epochs)
    assert built == settings  # the CLI adds nothing of its own


def test_unknown_keys_are_an_error_naming_them(tmp_path, captured):
    with pytest.raises(UsageError, match="unknown cls training setting.*: colour, speed"):
        ClsSettings.from_dict({"lr": 1e-3, "speed": 2, "colour": "red"})
    config = _toml(tmp_path / "c.toml", 'lr = 0.01\nspeed = 2\nimg-sise = 64\n')
    proc = run_cli("train-cls", str(tmp_path), "--config", str(config))
    assert proc.returncode == 2 and not captured
    assert "unknown key(s)" in proc.stderr and "img_sise, speed" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_toml_sets_lr_epochs_and_img_size(tmp_path, captured):
    config = _toml(tmp_path / "c.toml",
                   f'data = "{tmp_path}"\nlr = 0.02\nepochs = 3\nimg-size = 64\n'
                   'weights = "none"\nmodel = "smallcnn"\naugment = false\n')
    proc = run_cli("train-cls", "--config", str(config))
    assert proc.returncode == 0, proc.stderr
    settings = captured[-1][0]
    assert (settings.lr, settings.epochs, settings.img_size) == (0.02, 3, 64)
    assert settings.data == tmp_path and settings.model == "smallcnn"
    assert settings.augment is False and settings.weights == "none"
    assert ClsSettings.from_file(config) == settings  # the same file from Python


def test_command_line_options_override_the_file(tmp_path, captured):
    config = _toml(tmp_path / "c.toml", 'lr = 0.02\nepochs = 3\nimg_size = 64\n'
                                        'weights = "none"\naugment = false\n')
    proc = run_cli("train-seg", str(tmp_path), "--config", str(config), "--lr", "0.05",
                   "--img-size", "96", "--augment")
    assert proc.returncode == 0, proc.stderr
    settings = captured[-1][0]
    assert (settings.lr, settings.epochs, settings.img_size) == (0.05, 3, 96)
    assert settings.augment is True  # typed, even though it equals the default
    # a file without lr/epochs: the policy follows the file's weights
    scratch = _toml(tmp_path / "s.toml", 'weights = "none"\n')
    assert run_cli("train-seg", str(tmp_path), "--config", str(scratch)).returncode == 0
    assert (captured[-1][0].lr, captured[-1][0].epochs) == (1e-3, 30)


def test_replaying_a_run_config_gives_the_same_settings(cls_run, tmp_path, captured):
    recorded = json.loads((cls_run / "config.json").read_text())["settings"]
    proc = run_cli("train-cls", "--config", str(cls_run / "config.json"))
    assert proc.returncode == 0, proc.stderr
    settings, kind, resume = captured[-1]
    assert kind == "cls" and resume is None
    assert settings.run_dir is None  # a new run, never the old run directory
    expected = {k: v for k, v in recorded.items() if k not in ("run_dir", "cache_dir")}
    assert {k: v for k, v in settings.to_dict().items() if k not in ("run_dir", "cache_dir")} \
        == expected
    new_run = tmp_path / "again"
    proc = run_cli("train-cls", "--config", str(cls_run / "config.json"), "--run-dir",
                   str(new_run), "--epochs", "2")
    assert proc.returncode == 0, proc.stderr
    assert captured[-1][0].run_dir == new_run and captured[-1][0].epochs == 2
    # a classifier's run is no segmenter's config; --resume keeps the run's own settings
    wrong = run_cli("train-seg", "--config", str(cls_run / "config.json"))
    assert wrong.returncode == 2 and "records a 'cls' run" in wrong.stderr
    both = run_cli("train-cls", "--config", str(cls_run / "config.json"), "--resume",
                   str(cls_run))
    assert both.returncode == 2 and "--config and --resume" in both.stderr


def test_replay_drops_the_run_paths_and_keeps_the_rest(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    original = SegSettings(data=tmp_path / "data", run_dir=run, weights="none", img_size=64,
                           cache="disk", cache_dir=str(tmp_path / "cache"),
                           checkpoint_epochs=[10, 20])
    (run / "config.json").write_text(json.dumps(
        {"format": 1, "task": "seg", "status": "finished", "settings": original.to_dict()}))
    values, from_run = read_config_file(run / "config.json", "seg")
    assert from_run and "run_dir" not in values and "cache_dir" not in values
    replayed = SegSettings.from_file(run / "config.json")
    assert (replayed.run_dir, replayed.cache_dir) == (None, None)
    original.run_dir, original.cache_dir = None, None
    assert replayed == original


@pytest.mark.parametrize("name,text,message", [
    ("c.toml", "lr = [oops", "not valid TOML"),
    ("c.json", "{", "not valid JSON"),
    ("c.ini", "lr = 1", "a .toml or .json file expected"),
    ("c.toml", 'epochs = "many"', "epochs"),
    ("missing.toml", None, "no such file")])
def test_bad_config_files_exit_2_with_one_line(tmp_path, captured, name, text, message):
    path = tmp_path / name
    if text is not None:
        path.write_text(text)
    proc = run_cli("train-cls", str(tmp_path), "--config", str(path))
    assert proc.returncode == 2 and message in proc.stderr, proc.stderr
    assert "Traceback" not in proc.stderr and not captured


def test_yaml_config_needs_pyyaml_or_works(tmp_path, captured):
    path = tmp_path / "c.yaml"
    path.write_text("lr: 0.02\n")
    proc = run_cli("train-cls", str(tmp_path), "--config", str(path))
    try:
        import yaml  # noqa: F401
    except ImportError:
        assert proc.returncode == 2 and "PyYAML" in proc.stderr
    else:
        assert proc.returncode == 0 and captured[-1][0].lr == 0.02


def test_cv_takes_its_settings_from_a_config_file(learn_data, tmp_path):
    out = tmp_path / "cv"
    config = _toml(tmp_path / "cv.toml", f'folds = 3\nout = "{out}"\nweights = "none"\n'
                                         'img_size = 64\nepochs = 3\nbootstrap = 100\n')
    proc = run_cli("cv", "cls", str(learn_data), "--config", str(config), "--epochs", "2",
                   "--slurm", "--dry-run")
    assert proc.returncode == 0, proc.stderr
    plan = json.loads((out / "cv.json").read_text())
    assert (plan["train"]["img_size"], plan["train"]["epochs"], plan["train"]["lr"]) == (64, 2, 1e-3)
    assert plan["folds"] == 3 and plan["n_bootstrap"] == 100
    fold = _toml(tmp_path / "fold.toml", "fold = 1\n")  # cv runs every fold itself
    proc = run_cli("cv", "cls", str(learn_data), "--config", str(fold), "--out", str(out))
    assert proc.returncode == 2 and "unknown key(s)" in proc.stderr and "fold" in proc.stderr
    assert run_cli("cv", "cls", str(learn_data)).returncode == 2  # --out still required


def test_sweep_grid_and_options_from_a_config_file(tmp_path, monkeypatch):
    from breastus_cli.cli import (
        app,  # noqa: F401  (registers every command first)
        sweep_cmds,
    )
    from breastus_cli.engine.runs import settings as settings_module
    from breastus_cli.engine.orchestration import sweep as sweep_engine

    seen: list = []
    monkeypatch.setattr(sweep_engine, "sweep", lambda settings: seen.append(settings))
    monkeypatch.setattr(sweep_cmds, "_with_engine", lambda: None)
    monkeypatch.setattr(sweep_cmds, "_render", lambda result: None)
    config = _toml(tmp_path / "sweep.toml", f'out = "{tmp_path / "s"}"\nlr = [1e-3, 1e-2]\n'
                                            'epochs = "1,2"\nweights = "none"\nimg_size = 64\n'
                                            'model = "smallcnn"\njobs = 2\n')
    proc = run_cli("sweep", "cls", str(tmp_path), "--config", str(config), "--jobs", "1")
    assert proc.returncode == 0, proc.stderr
    settings = seen[-1]
    assert settings.lrs == (1e-3, 1e-2) and settings.epochs == (1, 2) and settings.jobs == 1
    assert settings.train.img_size == 64 and settings.out == tmp_path / "s"
    proc = run_cli("sweep", "seg", str(tmp_path), "--out", str(tmp_path / "t"))
    assert proc.returncode == 0, proc.stderr
    assert (seen[-1].lrs, seen[-1].epochs) == (settings_module.PAPER_LRS,
                                               settings_module.PAPER_EPOCHS)


def test_a_task_refuses_the_other_tasks_settings(synth_data, tmp_path):
    """Each task carries its settings type: segmentation settings given to the classification
    task are refused before any run directory is made (no isinstance asserts deep inside)."""
    from breastus_cli.engine.training.tasks import task_for
    from breastus_cli.engine.training.train import train

    settings = SegSettings(data=synth_data, weights="none", run_dir=tmp_path / "run")
    with pytest.raises(UsageError, match="cls task trains with ClsSettings, not SegSettings"):
        train(settings, task_for("cls"))
    assert not (tmp_path / "run").exists()
    assert task_for("seg").settings_type is SegSettings
