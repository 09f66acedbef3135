"""The review page (OUT/index.html): rows, escaping, thumbnails, errors, fused and ood columns;
``predict --report`` and ``breastus review`` end to end; the page as Chromium shows it."""

from __future__ import annotations

import csv
import hashlib
import html
import json
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
from conftest import run_cli
from PIL import Image

from breastus_cli.engine.apply.predict_output import COLUMNS, ERROR_COLUMNS
from breastus_cli.ownership import PREDICT_FORMAT
from breastus_cli.reports.review_page import PAGE, THUMBS, write_review_page

#: markup in a file name (no '/' in a name: an unclosed <script> would swallow the page)
EVIL = '<script>alert(1)<img src=x onerror="document.title=1">'

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


def fake_output(root: Path, rows: list[dict], errors: list[dict] = (), *,
                extra_columns: tuple[str, ...] = (), overlays: bool = True,
                record: dict | None = None) -> Path:
    """A predict output folder made by hand: ROOT/scans/<name>.png for every row, OUT with
    predict.json, predictions.csv (COLUMNS + ``extra_columns``), errors.csv and overlays/."""
    out, scans = root / "out", root / "scans"
    (out / "overlays").mkdir(parents=True)
    scans.mkdir(exist_ok=True)
    full = []
    for i, row in enumerate(rows):
        name = row.pop("name")
        scan = scans / name
        if not scan.exists():
            grey = np.full((60, 80), 40 + 20 * (i % 8), np.uint8)
            grey[20:40, 30:50] = 220
            Image.fromarray(grey).save(scan, format="PNG")
        cells = {"path": str(scan), "frame": "", "width": 80, "height": 60, **row}
        if overlays:
            overlay = f"overlays/ov-{hashlib.sha1(name.encode()).hexdigest()[:8]}.png"
            Image.new("RGB", (80, 60), (200, 30, 30)).save(out / overlay)
            cells["overlay"] = overlay
        full.append(cells)
    base = {"format": PREDICT_FORMAT, "breastus_version": "test", "created": "2026-12-07",
            "models": {"cls": {"path": "/runs/cls/smallcnn-run", "sha256": "ab" * 32},
                       "seg": {"path": "/runs/seg/unet-run", "sha256": "cd" * 32}},
            "threshold": 0.42, "seg_threshold": 0.5, "seg_postprocess": "largest",
            "engine": "keras", "tta": "flip", "fusion": None}
    (out / "predict.json").write_text(json.dumps({**base, **(record or {})}))
    for name, columns, data in (("predictions.csv", COLUMNS + list(extra_columns), full),
                                ("errors.csv", ERROR_COLUMNS, list(errors))):
        with open(out / name, "w", newline="") as fh:
            writer = csv.DictWriter(fh, fieldnames=columns, extrasaction="ignore")
            writer.writeheader()
            writer.writerows(data)
    return out


def table_rows(page: str) -> list[str]:
    body = page.split('<table id="scans"', 1)[1].split("</table>", 1)[0]
    return re.findall(r"<tr data-label.*?</tr>", body, flags=re.S)


def srcs(fragment: str) -> list[str]:
    return [html.unescape(s) for s in re.findall(r'<img [^>]*src="([^"]+)"', fragment)]


# ---- the page from hand-made outputs ---------------------------------------------------------

def test_rows_most_suspicious_first_with_thumbnails_that_exist(tmp_path):
    out = fake_output(tmp_path, [
        {"name": "low.png", "p_malignant": 0.10, "label": "benign", "lesion_area_px": 120},
        {"name": "high.png", "p_malignant": 0.93, "label": "malignant", "lesion_area_mm2": 12.5},
        {"name": "mid.png", "p_malignant": 0.50, "label": "malignant"}],
        [{"path": "/scans/broken.png", "reason": "cannot read (truncated)"}])
    result = write_review_page(out)
    page = (out / PAGE).read_text()
    assert (result.rows, result.errors, result.thumbs_written) == (3, 1, 6)
    rows = table_rows(page)
    assert [re.search(r'data-path="[^"]*/(\w+)\.png', r).group(1) for r in rows] == \
        ["high", "mid", "low"]
    assert "0.930" in rows[0] and 'class="badge malignant"' in rows[0] and "12.5 mm²" in rows[0]
    assert "120 px" in rows[2]
    for row in rows:  # a scan and an overlay thumbnail, relative, inside OUT/thumbs, lazy
        images = srcs(row)
        assert len(images) == 2 and row.count('loading="lazy"') == 2
        for src in images:
            assert src.startswith(f"{THUMBS}/") and (out / src).is_file()
            assert max(Image.open(out / src).size) <= 112
    # the overlay thumbnail links to the full overlay, relative to OUT
    assert re.search(r'<a href="overlays/ov-[0-9a-f]{8}.png"><img', rows[0])
    # nothing from the network, no external script or style, no inlined image data
    assert not re.search(r"https?://|<script src|<link |data:image", page)
    # the run's provenance and threshold in the header
    assert "smallcnn-run" in page and "sha256 abababababab" in page and "cdcdcdcdcdcd" in page
    assert "threshold <b>0.42</b>" in page and "TTA flip" in page and "largest" in page
    assert "1 malignant" not in page and "2 malignant" in page and "1 benign" in page


def test_errors_are_listed_apart(tmp_path):
    out = fake_output(tmp_path, [{"name": "a.png", "p_malignant": 0.3, "label": "benign"}],
                      [{"path": "/scans/z.dcm", "reason": "no pixel data"},
                       {"path": "/scans/b.png", "reason": "image has no pixels"}])
    page = (write_review_page(out).path).read_text()
    scans, errors = page.split('<h2 id="errors">', 1)
    assert "z.dcm" not in scans and "b.png" not in scans
    assert "Files that could not be read (2)" in errors
    assert errors.index("/scans/b.png") < errors.index("/scans/z.dcm")  # by path
    assert "<td>no pixel data</td>" in errors and 'href="#errors">2 could not be read' in scans


def test_every_text_is_escaped(tmp_path):
    out = fake_output(tmp_path, [
        {"name": f"{EVIL}.png", "p_malignant": 0.7, "label": "malignant",
         "fused_why": f"{EVIL} +1.00"}],
        [{"path": f"/x/{EVIL}.png", "reason": f"bad {EVIL}"}],
        record={"models": {"cls": {"path": f"/runs/{EVIL}", "sha256": EVIL}}, "tta": EVIL})
    page = write_review_page(out).path.read_text()
    assert "<script>alert" not in page and "<img src=x" not in page
    assert page.count(html.escape(EVIL)) >= 6
    assert page.count("<script>") == 1  # the page's own
    [row] = table_rows(page)
    assert all((out / s).is_file() for s in srcs(row))  # the file's thumbnail is there too


def test_fused_columns_are_used_when_present(tmp_path):
    extra = {"p_fused": 0.81, "label_fused": "malignant",
             "fused_why": "solidity -1.20; log_area_mm2 +0.85; not_parallel +0.30"}
    out = fake_output(tmp_path, [
        {"name": "a.png", "p_malignant": 0.35, "label": "benign", **extra},
        {"name": "b.png", "p_malignant": 0.60, "label": "malignant", "p_fused": 0.20,
         "label_fused": "benign", "fused_why": "solidity +0.10"}],
        record={"fusion": {"sha256": "ef" * 32, "threshold": 0.55}})
    page = write_review_page(out).path.read_text()
    rows = table_rows(page)
    assert 'data-path="' + str(tmp_path / "scans" / "a.png") in rows[0]  # 0.81 before 0.20
    assert 'data-v="0.810000">0.810' in rows[0] and "classifier 0.350" in rows[0]
    assert 'data-label="malignant"' in rows[0] and 'data-label="benign"' in rows[1]
    assert re.findall(r'<span class="(up|down)"[^>]*>([^<]+)</span>', rows[0]) == [
        ("down", "solidity -1.20"), ("up", "log_area_mm2 +0.85"), ("up", "not_parallel +0.30")]
    assert "p(malignant), fused" in page and "fused threshold <b>0.55</b>" in page
    assert "sha256 efefefefefef" in page


def test_ood_column_only_when_predictions_have_one(tmp_path):
    plain = write_review_page(fake_output(tmp_path / "a", [
        {"name": "a.png", "p_malignant": 0.3, "label": "benign"}])).path.read_text()
    assert "unlike training" not in plain and 'data-sort="ood"' not in plain
    out = fake_output(tmp_path / "b", [
        {"name": "a.png", "p_malignant": 0.3, "label": "benign", "ood_score": 2.5,
         "in_domain": "False"},
        {"name": "b.png", "p_malignant": 0.2, "label": "benign", "ood_score": 0.4,
         "in_domain": "True"}], extra_columns=("ood_score", "in_domain"))
    page = write_review_page(out).path.read_text()
    rows = table_rows(page)
    assert 'data-sort="ood"' in page and "1 unlike training" in page
    assert 'data-ood="1"' in rows[0] and "score 2.50" in rows[0]
    assert 'data-ood="0"' in rows[1] and "in domain" in rows[1]


def test_rewrite_keeps_fresh_thumbnails_and_drops_those_of_gone_rows(tmp_path):
    out = fake_output(tmp_path, [{"name": "a.png", "p_malignant": 0.3, "label": "benign"},
                                 {"name": "b.png", "p_malignant": 0.6, "label": "malignant"}])
    first = write_review_page(out)
    assert (first.thumbs_written, first.thumbs_kept) == (4, 0)
    again = write_review_page(out)
    assert (again.thumbs_written, again.thumbs_kept) == (0, 4)
    lines = (out / "predictions.csv").read_text().splitlines()
    (out / "predictions.csv").write_text("\n".join(lines[:2]) + "\n")  # b.png's row gone
    (tmp_path / "scans" / "a.png").unlink()  # and a.png's scan moved away
    last = write_review_page(out)
    assert last.rows == 1 and last.missing_images == [str(tmp_path / "scans" / "a.png")]
    assert list((out / THUMBS).iterdir()) == []  # nothing stale left behind
    assert "<td class=\"img none\">—</td>" in table_rows(last.path.read_text())[0]


def test_review_writes_the_page_without_tensorflow(tmp_path):
    from test_cli import _probe

    out = fake_output(tmp_path, [{"name": "a.png", "p_malignant": 0.3, "label": "benign"}])
    proc = _probe("review", str(out))
    assert "HEAVY= CODE=0" in proc.stderr, proc.stderr
    assert "review page: " in proc.stderr and (out / PAGE).is_file()


def test_review_refuses_a_folder_predict_did_not_write(tmp_path):
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "predictions.csv").write_text("path\n")
    proc = run_cli("review", str(tmp_path / "mine"))
    assert proc.returncode == 2 and "holds no predict.json" in proc.stderr
    assert sorted(p.name for p in (tmp_path / "mine").iterdir()) == ["predictions.csv"]


def test_thumbs_symlink_is_not_followed(tmp_path):
    out = fake_output(tmp_path, [{"name": "a.png", "p_malignant": 0.3, "label": "benign"}])
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (out / THUMBS).symlink_to(elsewhere)
    proc = run_cli("review", str(out))
    assert proc.returncode == 2 and "refusing to write through it" in proc.stderr  # the one rule
    assert str(out / THUMBS) in proc.stderr
    assert not any(elsewhere.iterdir()) and not (out / PAGE).exists()


def test_merge_report_writes_the_page_of_all_parts(tmp_path):
    parts = [fake_output(tmp_path / f"p{k}", [
        {"name": f"s{k}.png", "p_malignant": 0.2 * k, "label": "benign"}],
        record={"num_parts": 2, "part_id": k}) for k in (1, 2)]
    proc = run_cli("predict", "--merge", *map(str, parts), "--out", str(tmp_path / "all"),
                   "--report")
    assert proc.returncode == 0, proc.stderr
    rows = table_rows((tmp_path / "all" / PAGE).read_text())
    assert [re.search(r'data-path="[^"]*/(s\d)\.png', r).group(1) for r in rows] == ["s2", "s1"]
    assert all((tmp_path / "all" / s).is_file() for r in rows for s in srcs(r))
    assert 'href="overlays/' in rows[0]  # the merged folder's own overlay copies


# ---- end to end ------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def reported(learn_data, cls_run, seg_run, tmp_path_factory) -> Path:
    """``predict --report`` on a few synthetic test images and a file that cannot be read."""
    import pandas as pd

    scans = tmp_path_factory.mktemp("review") / "scans"
    scans.mkdir()
    manifest = pd.read_csv(learn_data / "manifest.csv")
    for i, image in enumerate(manifest["image"][:5]):
        shutil.copyfile(learn_data / image, scans / f"scan{i}.png")
    (scans / "broken.png").write_bytes(b"\x89PNG not really")
    out = scans.parent / "out"
    proc = run_cli("predict", str(scans), "--cls-run", str(cls_run), "--seg-run", str(seg_run),
                   "--out", str(out), "--save-overlays", "--report")
    assert proc.returncode == 0, proc.stderr
    assert f"review page: {out / PAGE} (5 scan(s), 1 error(s)" in proc.stderr
    return out


def test_predict_report_writes_the_page_of_its_rows(reported):
    page = (reported / PAGE).read_text()
    with open(reported / "predictions.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    shown = table_rows(page)
    assert len(shown) == len(rows) == 5
    by_p = sorted(rows, key=lambda r: -float(r["p_malignant"]))
    assert [re.search(r'data-path="([^"]+)"', r).group(1) for r in shown] == \
        [html.escape(r["path"]) for r in by_p]
    for row, cells in zip(shown, by_p):
        assert f'{float(cells["p_malignant"]):.3f}' in row and cells["label"] in row
        images = srcs(row)
        assert len(images) == 2 and all((reported / s).is_file() for s in images)
    assert "broken.png" in page.split('<h2 id="errors">')[1]


def test_review_rewrites_it_and_overwrite_removes_it(reported, cls_run, tmp_path):
    out = Path(shutil.copytree(reported, tmp_path / "out"))
    (out / PAGE).unlink()
    proc = run_cli("review", str(out))
    assert proc.returncode == 0 and (out / PAGE).is_file()
    assert "0 thumbnail(s) written, 10 kept" in proc.stderr
    # the page is predict's own output: --overwrite replaces it, and thumbs/ is never an input
    # (--out inside an input folder is allowed, its files never read; --out equal to an input is
    # refused by the ownership rule)
    scans = Path(json.loads((out / "predict.json").read_text())["inputs"][0])
    proc = run_cli("predict", str(scans), str(tmp_path), "--cls-run", str(cls_run), "--out",
                   str(out), "--overwrite")
    assert proc.returncode == 0, proc.stderr
    assert not (out / PAGE).exists() and not (out / THUMBS).exists()
    with open(out / "predictions.csv", newline="") as fh:
        assert len(list(csv.DictReader(fh))) == 5


# ---- as a person sees it: headless Chromium --------------------------------------------------

needs_chromium = pytest.mark.skipif(
    CHROMIUM is None, reason="chromium is not installed (Debian: apt-get install chromium)")


def selfcheck(page: Path, view: str = "", timeout: int = 120) -> dict:
    """Open ``page`` in headless Chromium with ``#selfcheck`` (and ``view``: sort, filter) and
    return what the page's check script wrote into the DOM."""
    url = page.resolve().as_uri() + "#selfcheck" + (f"&{view}" if view else "")
    proc = subprocess.run(
        [CHROMIUM, "--headless", "--disable-gpu", "--no-sandbox", "--no-first-run",
         "--user-data-dir=" + str(page.parent / ".chromium"), "--virtual-time-budget=10000",
         "--dump-dom", url], capture_output=True, text=True, timeout=timeout)
    shutil.rmtree(page.parent / ".chromium", ignore_errors=True)
    found = re.search(r'<pre id="selfcheck-result" hidden="">(.*?)</pre>', proc.stdout, re.S)
    assert found and found.group(1).strip(), proc.stderr[-2000:]
    return json.loads(html.unescape(found.group(1)))


@needs_chromium
def test_chromium_shows_the_rows_sorts_filters_and_loads_the_images(tmp_path):
    names = ["b.png", "a.png", "c.png", f"{EVIL}.png"]
    out = fake_output(tmp_path, [
        {"name": n, "p_malignant": p, "label": "malignant" if p >= 0.42 else "benign",
         "lesion_area_px": a} for n, p, a in zip(names, (0.9, 0.2, 0.6, 0.4), (5, 50, 7, 9))])
    write_review_page(out)
    page = out / PAGE
    scans = tmp_path / "scans"
    order = lambda check: [Path(p).name for p in check["order"]]  # noqa: E731
    first = selfcheck(page)
    assert first["rows"] == 4 and first["shown"] == "Showing 4 of 4"
    assert order(first) == ["b.png", "c.png", f"{EVIL}.png", "a.png"]  # most suspicious first
    assert first["images"] == 8 and first["loaded"] == 8  # every thumbnail decoded
    assert len(first["sort_ms"]) == 3  # the header clicks ran
    assert order(selfcheck(page, "sort=file&dir=asc"))[:3] == [f"{EVIL}.png", "a.png", "b.png"]
    assert order(selfcheck(page, "sort=area&dir=desc")) == ["a.png", f"{EVIL}.png", "c.png",
                                                            "b.png"]
    benign = selfcheck(page, "label=benign")
    assert order(benign) == [f"{EVIL}.png", "a.png"]
    assert benign["shown"] == "Showing 2 of 2 matching (4 scans)"
    assert order(selfcheck(page, "q=C.PNG")) == ["c.png"]
    # the file name with a script in it stayed text: no script of it ran, the row is there
    assert str(scans / f"{EVIL}.png") in first["order"]


@needs_chromium
def test_chromium_lays_out_a_page_of_rows_and_loads_the_rest_on_request(tmp_path, monkeypatch):
    from breastus_cli.reports import review_page

    monkeypatch.setattr(review_page, "PAGE_ROWS", 2)
    out = fake_output(tmp_path, [{"name": f"s{i}.png", "p_malignant": i / 10, "label": "benign"}
                                 for i in range(5)])
    page = write_review_page(out).path
    rows = table_rows(page.read_text())
    # rows after the first page wait hidden, their thumbnails not even requested
    assert [" hidden" in r.split(">", 1)[0] for r in rows] == [False, False, True, True, True]
    assert all('data-src="thumbs/' in r and ' src="' not in r for r in rows[2:])
    first = selfcheck(page)
    assert first["shown"] == "Showing 2 of 5" and len(first["order"]) == 2
    assert (first["images"], first["loaded"]) == (4, 4)
    every = selfcheck(page, "show=all&sort=file&dir=asc")
    assert [Path(p).name for p in every["order"]] == [f"s{i}.png" for i in range(5)]
    assert every["shown"] == "Showing 5 of 5" and (every["images"], every["loaded"]) == (10, 10)
    assert selfcheck(page, "show=4")["shown"] == "Showing 4 of 5"  # "Show more", twice
