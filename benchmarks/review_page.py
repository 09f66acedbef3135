"""The review page at scale: write OUT/index.html for N synthetic rows, then open and sort it in
headless Chromium, timed by the page itself (``#selfcheck=timing``: performance.now() from the
start of navigation to the rows parsed, sorted and laid out; then three header clicks, each
with its layout).

Run: .venv/bin/python benchmarks/review_page.py [--rows 2000] [--repeat 3]
     [--screenshot docs/review-page.png --rows 12]
Prints the numbers (nothing is recorded). The rows are synthetic scans (``breastus synth``
images, hard-linked under N names) with random scores, fused reasons and out-of-domain scores;
the overlays are the true masks drawn by predict's own overlay code.
"""

from __future__ import annotations

import argparse
import csv
import html
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from breastus_cli.data.imaging import read_luminance, read_mask  # noqa: E402
from breastus_cli.data.synth import SynthSettings, make_synthetic_breast  # noqa: E402
from breastus_cli.engine.stats.descriptors import DESCRIPTORS  # noqa: E402
from breastus_cli.engine.apply.overlays import lesion_overlay  # noqa: E402
from breastus_cli.engine.apply.predict_output import COLUMNS, ERROR_COLUMNS  # noqa: E402
from breastus_cli.ownership import PREDICT_FORMAT  # noqa: E402
from breastus_cli.reports.review_page import PAGE, PAGE_ROWS, write_review_page  # noqa: E402

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


def build(root: Path, rows: int, cases: int = 24, seed: int = 5) -> Path:
    """A predict output folder ROOT/out with ``rows`` synthetic rows and two error rows."""
    source = root / "src"
    make_synthetic_breast(SynthSettings(out=source, cases=cases, seed=seed, min_side=360,
                                        max_side=520))
    images = [p for p in sorted((source / "BrEaST-Lesions_USG-images_and_masks").glob(
        "case???.png")) if p.with_name(p.stem + "_tumor.png").is_file()]  # normal cases left out
    out, scans = root / "out", root / "scans" / "ward-3" / "2026-11"
    (out / "overlays").mkdir(parents=True)
    scans.mkdir(parents=True)
    overlays = []
    for image in images:  # the true mask as if predicted: probability = mask, contour drawn
        mask = read_mask([image.with_name(image.stem + "_tumor.png")])
        target = root / "overlays" / image.name
        target.parent.mkdir(exist_ok=True)
        overlays.append(lesion_overlay(read_luminance(image), mask.astype(float), mask, target))
    rng = np.random.default_rng(seed)
    table = []
    for i in range(rows):
        k = i % len(images)
        scan = scans / f"US-{1000 + i:05d}.png"
        os.link(images[k], scan)
        os.link(overlays[k], out / "overlays" / f"US-{1000 + i:05d}.png")
        p_cls = float(rng.beta(0.8, 1.4))
        p_fused = float(np.clip(p_cls + rng.normal(0, 0.12), 0.001, 0.999))
        picked = rng.choice(len(DESCRIPTORS), 3, replace=False)
        weights = sorted(rng.normal(0, 1, 3), key=abs, reverse=True)
        ood = round(float(rng.gamma(2.0, 0.33)), 3)
        table.append({
            "path": str(scan), "frame": "", "width": 400, "height": 300,
            "pixel_size_mm": 0.08, "p_malignant": round(p_cls, 4), "threshold": 0.42,
            "label": "malignant" if p_cls >= 0.42 else "benign",
            "lesion_area_px": int(rng.integers(300, 9000)),
            "lesion_area_mm2": round(float(rng.uniform(2, 60)), 3),
            "overlay": f"overlays/US-{1000 + i:05d}.png", "p_fused": round(p_fused, 4),
            "label_fused": "malignant" if p_fused >= 0.38 else "benign",
            "fused_why": "; ".join(f"{DESCRIPTORS[j]} {w:+.2f}" for j, w in zip(picked, weights)),
            "ood_score": ood, "in_domain": ood < 1})
    errors = [{"path": str(scans / "US-00017.dcm"), "reason": "no pixel data"},
              {"path": str(scans / "notes.txt"), "reason": "not an image"}]
    for name, columns, data in (
            ("predictions.csv", COLUMNS + ["ood_score", "in_domain"], table),
            ("errors.csv", ERROR_COLUMNS, errors)):
        with open(out / name, "w", newline="") as fh:
            writer = csv.DictWriter(fh, fieldnames=columns, extrasaction="ignore")
            writer.writeheader()
            writer.writerows(data)
    (out / "predict.json").write_text(json.dumps({
        "format": PREDICT_FORMAT, "breastus_version": "benchmark", "created": "2026-12-07T09:30",
        "models": {"cls": {"path": "runs/cls/20261201-lite0-busbra", "sha256": "3f9a" * 16},
                   "seg": {"path": "runs/seg/20261130-unet-b2", "sha256": "71c2" * 16}},
        "threshold": 0.42, "seg_threshold": 0.5, "seg_postprocess": "largest",
        "engine": "keras", "tta": "flip",
        "fusion": {"sha256": "a0e1" * 16, "threshold": 0.38, "partner": None}}))
    return out


def chromium(url: str, *extra: str) -> tuple[str, float]:
    """Chromium's dumped DOM of ``url`` and the process's wall time."""
    with tempfile.TemporaryDirectory() as profile:
        start = time.perf_counter()
        proc = subprocess.run([CHROMIUM, "--headless", "--disable-gpu", "--no-sandbox",
                               "--no-first-run", f"--user-data-dir={profile}", *extra, url],
                              capture_output=True, text=True, timeout=300)
        return proc.stdout, time.perf_counter() - start


def selfcheck(page: Path, view: str = "") -> tuple[dict, float]:
    dom, wall = chromium(page.resolve().as_uri() + "#selfcheck=timing" + view, "--dump-dom")
    found = re.search(r'<pre id="selfcheck-result" hidden="">(.*?)</pre>', dom, re.S)
    if not found:
        raise SystemExit("the page wrote no #selfcheck result")
    return json.loads(html.unescape(found.group(1))), wall


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rows", type=int, default=2000)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--screenshot", type=Path, help="Also save a 1280x900 screenshot here.")
    parser.add_argument("--keep", type=Path, help="Build the folder here (kept) instead.")
    args = parser.parse_args()
    if CHROMIUM is None:
        raise SystemExit("chromium is not installed (Debian: apt-get install chromium)")
    root = args.keep or Path(tempfile.mkdtemp(prefix="review-bench-"))
    if (root / "out" / "predict.json").is_file():  # a kept folder: its thumbnails are reused
        out = root / "out"
        with open(out / "predictions.csv", newline="") as fh:
            args.rows = sum(1 for _ in csv.DictReader(fh))
    else:
        out = build(root, args.rows)
    start = time.perf_counter()
    result = write_review_page(out)
    write_s = time.perf_counter() - start
    size = (out / PAGE).stat().st_size
    thumbs = sum(p.stat().st_size for p in (out / "thumbs").iterdir())
    print(f"{args.rows} rows: page written in {write_s:.1f} s ({result.thumbs_written} "
          f"thumbnails), index.html {size / 1024:.0f} KiB, thumbs/ {thumbs / 1024:.0f} KiB")
    if args.screenshot:
        args.screenshot.parent.mkdir(parents=True, exist_ok=True)
        chromium((out / PAGE).resolve().as_uri(), f"--screenshot={args.screenshot.resolve()}",
                 "--window-size=1280,900", "--hide-scrollbars")
        print(f"screenshot: {args.screenshot} ({args.screenshot.stat().st_size / 1024:.0f} KiB)")
    for view, what in (("", f"first {PAGE_ROWS} rows laid out"), ("&show=all",
                                                                   "every row laid out")):
        ready, sorts, walls = [], [], []
        for _ in range(args.repeat):
            check, wall = selfcheck(out / PAGE, view)
            assert check["rows"] == args.rows, check
            ready.append(check["ready_ms"])
            sorts.append(max(check["sort_ms"]))
            walls.append(wall)
        print(f"[{what}] open (navigation start -> {args.rows} rows parsed, sorted, laid out): "
              f"median {statistics.median(ready):.0f} ms, max {max(ready):.0f} ms; one sort by "
              f"a header click (with layout): median {statistics.median(sorts):.0f} ms, max "
              f"{max(sorts):.0f} ms; open + one sort: max "
              f"{max(r + s for r, s in zip(ready, sorts)):.0f} ms; chromium process (start to "
              f"exit) median {statistics.median(walls):.1f} s")
    print(f"{os.cpu_count()} CPU cores, load average {os.getloadavg()[0]:.1f}")
    if not args.keep:
        shutil.rmtree(root)


if __name__ == "__main__":
    main()
