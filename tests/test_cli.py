"""The `breastus` command as a user meets it: help, version, errors, exit codes, no TensorFlow."""

from __future__ import annotations

import subprocess
import sys

import pandas as pd
import pytest

from conftest import run_cli

from breastus_cli.cli.app import app

COMMANDS = ["synth", "prepare", "split", "train-cls", "train-seg", "sweep", "evaluate",
            "predict", "review", "export", "cv", "weights"]

# Runs the CLI in-process and reports which heavy modules it imported.
_PROBE = """
import sys
from breastus_cli.cli.app import main
try:
    main(sys.argv[1:])
except SystemExit as exc:
    code = exc.code
heavy = sorted(m for m in ("tensorflow", "tf_keras", "keras", "segmentation_models")
               if m in sys.modules)
print("HEAVY=" + ",".join(heavy), "CODE=" + str(code), file=sys.stderr)
"""


def _probe(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", _PROBE, *args], capture_output=True, text=True,
                          timeout=300)


def test_help_lists_every_command_of_the_design():
    proc = run_cli("--help", subprocess=True)  # the installed entry point itself
    assert proc.returncode == 0
    for name in COMMANDS:
        assert name in proc.stdout


def test_version():
    from breastus_cli import __version__

    proc = run_cli("--version", subprocess=True)
    assert proc.returncode == 0 and proc.stdout.strip() == f"breastus {__version__}"
    proc = subprocess.run([sys.executable, "-m", "breastus_cli", "--version"],
                          capture_output=True, text=True)
    assert proc.stdout.strip() == f"breastus {__version__}"


@pytest.mark.parametrize("args", [["--help"], ["--version"], ["prepare", "--help"]])
def test_help_and_version_do_not_import_tensorflow(args):
    proc = _probe(*args)
    assert "HEAVY= CODE=0" in proc.stderr, proc.stderr


def test_data_commands_do_not_import_tensorflow(tmp_path):
    src, data = tmp_path / "src", tmp_path / "data"
    for args in (["synth", str(src), "--cases", "12", "--min-side", "64", "--max-side", "96"],
                 ["prepare", str(src), "--out", str(data)],
                 ["split", str(data)]):
        proc = _probe(*args)
        assert "HEAVY= CODE=0" in proc.stderr, (args, proc.stderr)


def test_usage_errors_exit_2_with_one_clear_line(tmp_path):
    proc = run_cli("prepare")
    assert proc.returncode == 2 and "Missing argument" in proc.stderr
    proc = run_cli("prepare", str(tmp_path), "--out", str(tmp_path / "o"), "--format", "dicomdir")
    assert proc.returncode == 2
    assert "--format must be one of" in proc.stderr and "Traceback" not in proc.stderr
    proc = run_cli("nonsense")
    assert proc.returncode == 2


def test_debug_shows_the_traceback_anywhere_on_the_line(tmp_path):
    proc = run_cli("split", str(tmp_path / "nope"), "--debug", subprocess=True)
    assert proc.returncode == 2
    assert "Traceback" in proc.stderr and "dataset folder not found" in proc.stderr
    proc = run_cli("split", str(tmp_path / "nope"), subprocess=True)
    assert "Traceback" not in proc.stderr
    assert proc.stderr.strip().splitlines()[0].startswith("error: dataset folder not found")


@pytest.mark.parametrize("args", [["train-cls"], ["train-seg"], ["evaluate"], ["predict"],
                                  ["review"], ["export"], ["sweep", "cls"], ["sweep", "collect"],
                                  ["cv", "cls"], ["weights", "list"]])
def test_every_command_has_help_with_examples(args):
    proc = run_cli(*args, "--help")
    assert proc.returncode == 0, proc.stderr
    assert "Usage: breastus" in proc.stdout


def _commands(typer_app, prefix=()):
    for info in typer_app.registered_commands:
        yield (*prefix, info.name), info.help
    for group in typer_app.registered_groups:
        yield from _commands(group.typer_instance, (*prefix, group.name))


def test_help_paragraphs_are_not_broken_where_the_source_wrapped_them():
    # Typer's rich help keeps every line break of a docstring: the source's 100-column wrap came
    # out as ragged lines on an 80-column terminal ("...the ultrasound share of the" / "frame")
    commands = dict(_commands(app))
    assert len(commands) >= 20
    for name, text in commands.items():
        assert text, name
        for paragraph in text.split("\n\n"):
            for line in paragraph.split("\n")[1:]:
                assert line.lstrip().startswith(("- ", "* ", "\b")), (name, line)
    shift = commands[("shift",)]
    assert "contrast and the ultrasound share of the frame, and scores" in shift
    proc = run_cli("shift", "--help", env={"COLUMNS": "200"}, subprocess=True)
    assert "the ultrasound share of the frame, and scores each scan's distance" in proc.stdout


def test_end_to_end_synth_prepare_split(tmp_path):
    src, data = tmp_path / "src", tmp_path / "data"
    proc = run_cli("synth", str(src), "--cases", "30", "--seed", "3", "--min-side", "64",
                   "--max-side", "128")
    assert proc.returncode == 0, proc.stderr
    assert "benign" in proc.stdout and "malignant" in proc.stdout
    proc = run_cli("prepare", str(src), "--out", str(data))
    assert proc.returncode == 0, proc.stderr
    assert "kept" in proc.stdout and "no tumor mask" in proc.stdout
    manifest = pd.read_csv(data / "manifest.csv")
    proc = run_cli("split", str(data), "--folds", "3", "--quiet")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == ""  # --quiet: results in files only
    splits = pd.read_csv(data / "splits.csv")
    assert sorted(splits["case_id"]) == sorted(manifest["case_id"])
    assert set(splits["fold"]) == {0, 1, 2}
    # the same dataset refused a second time without --overwrite, exit 2, nothing lost
    proc = run_cli("prepare", str(src), "--out", str(data))
    assert proc.returncode == 2 and "--overwrite" in proc.stderr
    assert (data / "splits.csv").exists()
