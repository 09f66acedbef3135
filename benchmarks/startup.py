"""Start-up cost of the CLI: `breastus --help` against `python -c pass`, as a ratio.

Run: .venv/bin/python benchmarks/startup.py [--repeat 15]
Writes the result between the STARTUP markers of BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _record import record  # noqa: E402


def _time(command: list[str], repeat: int) -> float:
    subprocess.run(command, capture_output=True, check=True)  # warm the file cache
    samples = []
    for _ in range(repeat):
        start = time.perf_counter()
        subprocess.run(command, capture_output=True, check=True)
        samples.append(time.perf_counter() - start)
    return statistics.median(samples)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--repeat", type=int, default=15)
    args = parser.parse_args()
    exe = Path(sys.executable).with_name("breastus")
    baseline = _time([sys.executable, "-c", "pass"], args.repeat)
    help_s = _time([str(exe), "--help"], args.repeat)
    version_s = _time([str(exe), "--version"], args.repeat)
    tf_s = _time([sys.executable, "-c", "from breastus_cli import backend; backend.tf()"], 3)
    rows = [
        ("`python -c pass` (baseline)", baseline, 1.0),
        ("`breastus --version`", version_s, version_s / baseline),
        ("`breastus --help`", help_s, help_s / baseline),
        ("importing TensorFlow through `backend.tf()` (what `--help` avoids)", tf_s,
         tf_s / baseline),
    ]
    lines = ["| command | median seconds | x baseline |", "|---|---:|---:|"]
    lines += [f"| {name} | {sec:.3f} | {ratio:.1f} |" for name, sec, ratio in rows]
    lines.append("")
    lines.append(f"Median of {args.repeat} runs (TensorFlow import: 3), "
                 f"command: `{Path(sys.executable).name} benchmarks/startup.py`.")
    record("STARTUP", "\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
