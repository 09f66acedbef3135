"""The shell recipes in examples/ parse (``bash -n``): a quoting or line-continuation slip in a
resumable multi-hour recipe should fail here, not hours into a run."""
from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
SCRIPTS = sorted(EXAMPLES.glob("*.sh"))


@pytest.mark.skipif(shutil.which("bash") is None, reason="no bash on this machine")
@pytest.mark.parametrize("script", SCRIPTS, ids=[s.name for s in SCRIPTS])
def test_example_script_parses(script):
    proc = subprocess.run(["bash", "-n", str(script)], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr


def test_the_recipes_are_there():
    assert {"results_breast.sh", "results_busbra.sh", "results_pretrained.sh"} <= {
        s.name for s in SCRIPTS}
