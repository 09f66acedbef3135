"""Wall time of the reference study's sweep grid, scaled down: prefix reuse vs --independent,
and --jobs 2 vs 1, in one run on the same synthetic data.

The grid keeps the study's shape (7 learning rates x 5 epoch values) with epochs 1..5 instead
of 10..50, a small CNN at 64 px, so the cost is dominated by what the sweep design changes:
the number of trainings (7 with prefixes, 35 independent) and how they share the cores.

Run: .venv/bin/python benchmarks/sweep_cost.py   (about 10 minutes on 2 cores)
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _record import record  # noqa: E402

LRS = "1e-6,1e-5,1e-4,1e-3,5e-3,1e-2,5e-2"
EPOCHS = "1,2,3,4,5"
TRAIN = ["--model", "smallcnn", "--weights", "none", "--img-size", "64", "--batch-size", "16"]


def _sweep(data: Path, out: Path, *extra: str) -> float:
    exe = Path(sys.executable).with_name("breastus")
    start = time.perf_counter()
    subprocess.run([str(exe), "-q", "sweep", "cls", str(data), *TRAIN, "--lr", LRS, "--epochs",
                    EPOCHS, "--out", str(out), *extra], check=True)
    return time.perf_counter() - start


def main() -> None:
    from breastus_cli.data.prepare import PrepareSettings, prepare
    from breastus_cli.data.split import SplitSettings, split_dataset
    from breastus_cli.data.synth import SynthSettings, make_synthetic_breast

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        make_synthetic_breast(SynthSettings(out=root / "src", cases=120, seed=3, min_side=96,
                                            max_side=160))
        prepare(PrepareSettings(source=root / "src", out=root / "data"))
        split_dataset(SplitSettings(data=root / "data", seed=42))
        runs = [
            ("prefix reuse, --jobs 1 (baseline)", "7", _sweep(root / "data", root / "a")),
            ("prefix reuse, --jobs 2", "7", _sweep(root / "data", root / "b", "--jobs", "2")),
            ("--independent, --jobs 1", "35", _sweep(root / "data", root / "c",
                                                     "--independent")),
        ]
        rerun = _sweep(root / "data", root / "a")
    base = runs[0][2]
    lines = ["| sweep (7 lr x 5 epoch values = 35 points) | trainings | wall seconds | "
             "x baseline |", "|---|---:|---:|---:|"]
    lines += [f"| {name} | {n} | {sec:.1f} | {sec / base:.2f} |" for name, n, sec in runs]
    lines.append(f"| rerun of the finished baseline (nothing to train) | 0 | {rerun:.1f} | "
                 f"{rerun / base:.2f} |")
    lines += ["", "120 synthetic cases (84 train / 12 val), smallcnn at 64 px, epochs 1..5 "
              "standing for the study's 10..50. Command: `python benchmarks/sweep_cost.py`."]
    record("SWEEP_COST", "\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
