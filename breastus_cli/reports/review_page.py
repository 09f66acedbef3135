"""The review page of a predict output: ``OUT/index.html``, one row per scan, for a clinician.

    OUT/index.html   a self-contained page (inline CSS and JS, no network): thumbnails of the scan
                     and its overlay, p(malignant) and label (the fused ones where the classifier
                     has a fusion), the descriptors behind the fused score, the out-of-domain
                     flag where predictions.csv has one, sortable (most suspicious first) and
                     filterable; the files that could not be read in a table apart; the models,
                     their SHA-256 and the thresholds in the header
    OUT/thumbs/      small JPEG thumbnails the page loads lazily (thousands of scans stay fast)

Every text on the page is HTML-escaped; images are referred to by paths relative to OUT, so
the folder can be moved or zipped. The page works without JavaScript (rows in the order
written: most suspicious first); the script sorts, filters and lays out PAGE_ROWS rows at a
time ("Show more"). ``#sort=COLUMN&dir=asc``, ``#q=TEXT``, ``#label=malignant`` and
``#show=all`` in the address set the view (a bookmark keeps it);
``#selfcheck`` writes the page's own timings and image checks into ``#selfcheck-result`` (the
headless-browser test reads them).
"""

from __future__ import annotations

import hashlib
import html
import os
import time
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote

import numpy as np
from PIL import Image

from breastus_cli import __version__
from breastus_cli.atomic import atomic_path, write_text
from breastus_cli.engine.apply.predict_output import ERRORS, PREDICTIONS, REVIEW_PAGE, THUMBS
from breastus_cli.errors import InputError
from breastus_cli.ownership import claim, read_marker

PAGE = REVIEW_PAGE
#: rows laid out at first (and per "Show more"): the rest wait hidden, without layout cost
#: (2,000 rows, 100 of them shown: 1.0 s to open, 0.3 s a sort; 50: 0.5-1.0 s and 0.1 s, on 2
#: loaded cores); a browser without JavaScript shows them all (a <noscript> style)
PAGE_ROWS = 50
#: the longer side of a thumbnail, in pixels (about 3 KB as a JPEG)
THUMB_SIDE = 112
#: rows of predictions.csv whose in_domain cell says "out of domain"
_FALSE = {"false", "0", "no", "n", "f"}


@dataclass
class ReviewRow:
    """One scan (a file, or a frame of a multi-frame DICOM) as the page shows it."""

    path: str
    frame: str
    p: float | None  # the fused p(malignant) where there is one, else the classifier's
    p_classifier: float | None  # shown beside a fused score
    label: str
    reasons: list[tuple[str, str]]  # (descriptor, signed log-odds) behind the fused score
    area: float | None
    area_unit: str
    ood_score: float | None
    in_domain: bool | None
    scan_thumb: str | None = None  # relative to OUT
    overlay_thumb: str | None = None
    overlay_link: str | None = None
    thumb_size: tuple[int, int] = (THUMB_SIDE, THUMB_SIDE)


@dataclass
class ReviewPage:
    """What :func:`write_review_page` wrote."""

    path: Path
    rows: int
    errors: int
    thumbs_written: int
    thumbs_kept: int
    seconds: float
    missing_images: list[str] = field(default_factory=list)


# ---- reading the predict output ---------------------------------------------------------------

def _float(text: str | None) -> float | None:
    try:
        value = float(text) if text not in (None, "") else None
    except ValueError:
        return None
    return value if value is not None and value == value else None


def _read_csv(path: Path) -> tuple[list[str], list[dict[str, str]]]:
    """The columns and complete rows of a CSV predict wrote (a cut-off last row is left out)."""
    import csv

    if not path.is_file():
        return [], []
    with path.open(newline="", encoding="utf-8", errors="replace") as handle:
        reader = csv.reader(handle)
        header = next(reader, [])
        rows = [dict(zip(header, r)) for r in reader if len(r) == len(header)]
    return header, rows


def _reasons(text: str) -> list[tuple[str, str]]:
    """``"solidity -1.20; log_area_mm2 +0.85"`` -> [("solidity", "-1.20"), ...]."""
    out = []
    for item in (text or "").split(";"):
        name, _, value = item.strip().rpartition(" ")
        if item.strip():
            out.append((name, value) if name else (value, ""))
    return out


def _in_domain(text: str | None) -> bool | None:
    if text in (None, ""):
        return None
    return str(text).strip().lower() not in _FALSE


def review_rows(columns: list[str], rows: Iterable[dict[str, str]]) -> list[ReviewRow]:
    """predictions.csv rows as the page shows them, most suspicious first (rows without a score
    last, in path order)."""
    fused = "p_fused" in columns
    out = []
    for row in rows:
        p_cls = _float(row.get("p_malignant"))
        p_fused = _float(row.get("p_fused")) if fused else None
        mm2 = _float(row.get("lesion_area_mm2"))
        out.append(ReviewRow(
            path=row.get("path", ""), frame=row.get("frame", ""),
            p=p_fused if p_fused is not None else p_cls,
            p_classifier=p_cls if p_fused is not None else None,
            label=(row.get("label_fused") if p_fused is not None else row.get("label")) or "",
            reasons=_reasons(row.get("fused_why", "")),
            area=mm2 if mm2 is not None else _float(row.get("lesion_area_px")),
            area_unit="mm²" if mm2 is not None else "px",
            ood_score=_float(row.get("ood_score")), in_domain=_in_domain(row.get("in_domain"))))
    out.sort(key=lambda r: (r.p is None, -(r.p or 0.0), r.path, r.frame))
    return out


# ---- thumbnails -------------------------------------------------------------------------------

def _thumb_name(row: ReviewRow, kind: str) -> str:
    """A file name unique per scan path and frame (inputs from different folders may share a
    name), readable by its stem."""
    digest = hashlib.sha1(f"{row.path}\0{row.frame}".encode()).hexdigest()[:10]
    stem = "".join(c if c.isalnum() or c in "-_" else "_" for c in Path(row.path).stem)[:40]
    frame = f"-f{int(row.frame):04d}" if row.frame.isdigit() else ""
    return f"{THUMBS}/{stem}-{digest}{frame}-{kind}.jpg"


def _inside(out: Path, value: str) -> Path | None:
    """A file named by predictions.csv (overlays/..., masks/...) when it lies inside OUT."""
    if not value:
        return None
    try:
        real = (out / value).resolve()
        real.relative_to(out.resolve())
    except (ValueError, OSError):
        return None
    return real if real.is_file() else None


def _fresh(target: Path, sources: list[Path]) -> bool:
    """The thumbnail exists and is newer than what it was made from (kept, not redone)."""
    try:
        made = target.stat().st_mtime_ns
        return all(made >= s.stat().st_mtime_ns for s in sources)
    except OSError:
        return False


def _save_jpeg(image: Image.Image, target: Path) -> tuple[int, int]:
    image.thumbnail((THUMB_SIDE, THUMB_SIDE), Image.BILINEAR, reducing_gap=2.0)
    with atomic_path(target) as tmp:
        image.convert("RGB").save(tmp, format="JPEG", quality=80)
    return image.size


def _grey_thumb(image: np.ndarray) -> Image.Image:
    thumb = Image.fromarray(image)
    thumb.thumbnail((THUMB_SIDE, THUMB_SIDE), Image.BILINEAR, reducing_gap=2.0)
    return thumb


def _mask_overlay(grey: Image.Image, mask_file: Path) -> Image.Image:
    """The mask's contour in yellow over the scan's thumbnail (no overlay file was saved)."""
    from breastus_cli.data.imaging import read_mask
    from breastus_cli.engine.apply.overlays import contour

    mask = Image.fromarray(read_mask([mask_file]).astype(np.uint8) * 255)
    small = np.asarray(mask.resize(grey.size, Image.NEAREST)) > 127
    rgb = np.repeat(np.asarray(grey.convert("L"))[..., None], 3, axis=2).copy()
    rgb[contour(small)] = (255, 230, 0)
    return Image.fromarray(rgb)


def _open_rgb(path: Path) -> Image.Image:
    with Image.open(path) as image:
        image.draft("RGB", (THUMB_SIDE * 2, THUMB_SIDE * 2))  # JPEG: decoded at a fraction
        return image.convert("RGB")


def _size_of(path: Path) -> tuple[int, int]:
    with Image.open(path) as image:
        return image.size


def _thumbs_of_file(out: Path, rows: list[tuple[ReviewRow, dict[str, str]]]) -> tuple[int, int,
                                                                                      bool]:
    """Thumbnails of one scan file's rows (a multi-frame DICOM is decoded once); returns
    (written, kept, whether the scan could be read)."""
    from breastus_cli.data.scans import decode

    written = kept = 0
    source = Path(rows[0][0].path)
    frames: dict[str, np.ndarray] | None = None
    readable = True
    for row, cells in rows:
        scan_target = out / _thumb_name(row, "scan")
        overlay_file = _inside(out, cells.get("overlay", ""))
        mask_file = _inside(out, cells.get("mask", ""))
        over_target = out / _thumb_name(row, "overlay")
        if overlay_file is not None:
            row.overlay_link = overlay_file.relative_to(out.resolve()).as_posix()
        # an overlay thumbnail from the overlay file, else the mask's contour on the scan
        over_from = ([overlay_file] if overlay_file else
                     [mask_file, source] if mask_file else [])
        if _fresh(scan_target, [source]) and (not over_from or _fresh(over_target, over_from)):
            row.scan_thumb = scan_target.relative_to(out).as_posix()  # kept from a former page
            row.thumb_size = _size_of(scan_target)
            if over_from:
                row.overlay_thumb = over_target.relative_to(out).as_posix()
            kept += 1 + bool(over_from)
            continue
        if frames is None:
            try:
                frames = {"" if f.frame is None else str(f.frame): f.image
                          for f in decode(source)}
            except Exception:  # moved, deleted or unreadable since predict: the row stays
                frames, readable = {}, False
        image = frames.get(row.frame)
        if image is None:
            readable = False
            continue
        grey = _grey_thumb(image)
        row.thumb_size = _save_jpeg(grey.copy(), scan_target)
        row.scan_thumb = scan_target.relative_to(out).as_posix()
        written += 1
        try:
            picture = (_open_rgb(overlay_file) if overlay_file else
                       _mask_overlay(grey, mask_file) if mask_file else None)
        except Exception:  # a damaged overlay or mask file: the row shows the scan alone
            picture = None
        if picture is not None:
            _save_jpeg(picture, over_target)
            row.overlay_thumb = over_target.relative_to(out).as_posix()
            written += 1
    return written, kept, readable


def _make_thumbs(out: Path, pairs: list[tuple[ReviewRow, dict[str, str]]],
                 workers: int = 2) -> tuple[int, int, list[str]]:
    folder = out / THUMBS
    if folder.is_symlink() or (folder.exists() and not folder.is_dir()):
        raise InputError(f"{folder} is not a folder breastus made: refusing to write thumbnails "
                         "through it")
    folder.mkdir(exist_ok=True)
    by_file: dict[str, list[tuple[ReviewRow, dict[str, str]]]] = {}
    for row, cells in pairs:
        by_file.setdefault(row.path, []).append((row, cells))
    written = kept = 0
    missing = []
    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        for path, (w, k, readable) in zip(by_file, pool.map(
                lambda group: _thumbs_of_file(out, group), by_file.values())):
            written, kept = written + w, kept + k
            if not readable:
                missing.append(path)
    used = {out / r.scan_thumb for r, _ in pairs if r.scan_thumb}
    used |= {out / r.overlay_thumb for r, _ in pairs if r.overlay_thumb}
    for old in folder.glob("*.jpg"):  # thumbnails of rows no longer in predictions.csv
        if old not in used and old.is_file() and not old.is_symlink():
            old.unlink()
    return written, kept, missing


# ---- the page ---------------------------------------------------------------------------------

_CSS = """
:root { --ink: #1d2430; --dim: #5f6b7a; --line: #d9dee5; --mal: #b3261e; --ben: #1b6e3a;
        --ood: #8a5a00; }
* { box-sizing: border-box; }
body { font: 14px/1.4 -apple-system, "Segoe UI", Roboto, Helvetica, Arial, sans-serif;
       color: var(--ink); margin: 0; background: #fff; }
header { padding: 14px 20px 10px; border-bottom: 1px solid var(--line); background: #f6f8fa; }
h1 { font-size: 20px; margin: 0 0 4px; }
h2 { font-size: 17px; margin: 28px 20px 8px; }
.meta, .prov { color: var(--dim); margin: 2px 0; font-size: 13px; }
.prov b { color: var(--ink); font-weight: 600; }
.prov code { font: 12px Menlo, Consolas, monospace; background: #eceff3; padding: 0 3px;
             border-radius: 3px; }
.counts { margin: 6px 0 0; font-size: 14px; }
.controls { margin-top: 8px; display: flex; gap: 10px; align-items: center; flex-wrap: wrap; }
.controls input { font: inherit; padding: 4px 8px; width: 320px; border: 1px solid #b8c0cc;
                  border-radius: 4px; }
.controls select { font: inherit; padding: 3px 6px; }
#shown { color: var(--dim); }
table { border-collapse: collapse; width: 100%; }
#scans { table-layout: fixed; }  /* column widths from here, not from measuring every row */
.c-scan, .c-overlay { width: 126px; } .c-file { width: 21%; } .c-p { width: 160px; }
.c-label { width: 110px; } .c-area { width: 110px; } .c-ood { width: 140px; }
#more { margin: 12px 20px; } #more button { font: inherit; padding: 4px 14px; margin-right: 8px; }
th, td { border-bottom: 1px solid var(--line); padding: 6px 10px; text-align: left;
         vertical-align: middle; }
thead th { background: #eef1f5; font-size: 13px; font-weight: 600; position: sticky; top: 0;
           z-index: 1; }
th[data-sort] { cursor: pointer; user-select: none; }
th[data-sort]:hover { background: #e1e6ed; }
th[aria-sort=ascending]::after { content: " \\25B2"; font-size: 10px; }
th[aria-sort=descending]::after { content: " \\25BC"; font-size: 10px; }
td.img { width: 1%; padding: 3px 6px; }
td.img img { display: block; background: #000; border-radius: 2px; }
.file { overflow-wrap: anywhere; }
.file .dir { display: block; color: var(--dim); font-size: 12px; }
.num { font-variant-numeric: tabular-nums; white-space: nowrap; }
.bar { display: block; height: 5px; background: #e6e9ee; border-radius: 3px; margin-top: 3px;
       width: 90px; }
.bar i { display: block; height: 100%; background: var(--mal); border-radius: 3px; }
.sub { display: block; color: var(--dim); font-size: 12px; }
.badge { display: inline-block; padding: 1px 8px; border-radius: 10px; font-size: 13px;
         font-weight: 600; }
.malignant { background: #fde7e5; color: var(--mal); }
.benign { background: #e3f3e8; color: var(--ben); }
.ood { background: #fff1d6; color: var(--ood); }
.why span { display: inline-block; margin: 1px 4px 1px 0; padding: 0 6px; border-radius: 3px;
            font-size: 12px; background: #eef1f5; white-space: nowrap; }
.why .up { color: var(--mal); }
.why .down { color: var(--ben); }
.errors td { color: #6b2a22; }
.none { color: #9aa3ae; }
footer { color: var(--dim); font-size: 12px; margin: 28px 20px 40px; }
""".strip()

#: sorts and filters the rows already in the page (no framework, no network)
_JS = r"""
(function () {
  "use strict";
  var parsed = performance.now();
  var table = document.getElementById("scans");
  if (!table) return;
  var body = table.tBodies[0], heads = table.tHead.rows[0].cells;
  var rows = Array.prototype.slice.call(body.rows), keys = {}, text = null;
  var q = document.getElementById("q"), label = document.getElementById("label");
  var shown = document.getElementById("shown"), more = document.getElementById("more");
  function params() { return new URLSearchParams(location.hash.slice(1)); }
  function column(name) {
    for (var i = 0; i < heads.length; i++) if (heads[i].dataset.sort === name) return i;
    return -1;
  }
  function keyOf(i) {  // each column's keys are read from the cells once
    if (keys[i]) return keys[i];
    var numeric = heads[i].dataset.type === "num";
    return keys[i] = rows.map(function (r) {
      var v = r.cells[i].dataset.v;
      if (v === undefined) v = r.cells[i].textContent;
      return numeric ? (v === "" ? NaN : +v) : v.toLowerCase();
    });
  }
  // the rows in their current order (indices into rows), which of them pass the filter, and
  // how many of those are laid out: a page of them, more on request (2,000 rows in a table
  // cost seconds of layout; hidden ones cost nothing, wherever they stand)
  var order = rows.map(function (_, n) { return n; }), pass = null;
  var step = +table.dataset.page, limit = step;
  function sort(name, dir) {
    var i = column(name);
    if (i < 0) return;
    var k = keyOf(i), sign = dir === "asc" ? 1 : -1;
    order.sort(function (a, b) {
      var x = k[a], y = k[b], xm = x !== x || x === "", ym = y !== y || y === "";
      if (xm || ym) return xm === ym ? a - b : (xm ? 1 : -1);  // empty cells last
      return x < y ? -sign : x > y ? sign : a - b;
    });
    for (var h = 0; h < heads.length; h++) heads[h].removeAttribute("aria-sort");
    heads[i].setAttribute("aria-sort", dir === "asc" ? "ascending" : "descending");
  }
  function filter(words, which) {
    words = words.toLowerCase();
    if (words && text === null) text = rows.map(function (r) {
      return r.textContent.toLowerCase(); });
    pass = rows.map(function (r, n) {
      return (!words || text[n].indexOf(words) >= 0) &&
        (!which || (which === "ood" ? r.dataset.ood === "1" : r.dataset.label === which));
    });
  }
  function show() {  // only the shown rows move, in order, to the end: hidden ones take no
    var count = 0, frag = document.createDocumentFragment();  // place wherever they are
    for (var n = 0; n < order.length; n++) {
      var i = order[n], r = rows[i];
      if (!(pass[i] && count++ < limit)) {
        if (!r.hidden) r.hidden = true;
        continue;
      }
      frag.appendChild(r);
      if (!r.hidden) continue;
      r.hidden = false;
      var later = r.querySelectorAll("img[data-src]");
      for (var m = 0; m < later.length; m++) {
        later[m].src = later[m].dataset.src;
        later[m].removeAttribute("data-src");
      }
    }
    body.appendChild(frag);
    var on = Math.min(count, limit);
    shown.textContent = "Showing " + on + " of " + count +
      (count < rows.length ? " matching (" + rows.length + " scans)" : "");
    more.hidden = count <= limit;
    more.firstChild.textContent = "Show " + Math.min(step, count - on) + " more";
  }
  var sorted = table.dataset.sorted, filtered = null;  // the order the rows were written in
  function apply() {
    var p = params(), by = p.get("sort") || table.dataset.sort;
    var dir = p.get("dir") || (heads[column(by)] || {dataset: {}}).dataset.dir || "desc";
    if (sorted !== by + " " + dir) { sort(by, dir); sorted = by + " " + dir; }
    if (q.value !== (p.get("q") || "")) q.value = p.get("q") || "";
    if (label.value !== (p.get("label") || "")) label.value = p.get("label") || "";
    if (filtered !== q.value + "\n" + label.value) {
      filter(q.value, label.value);
      filtered = q.value + "\n" + label.value;
    }
    limit = p.get("show") === "all" ? rows.length : Math.max(step, +p.get("show") || 0);
    show();
  }
  function setHash(change) {
    var p = params();
    for (var k in change) { if (change[k]) p.set(k, change[k]); else p.delete(k); }
    history.replaceState(null, "", "#" + p.toString());
    apply();
  }
  more.firstChild.addEventListener("click", function () { setHash({show: limit + step}); });
  more.lastChild.addEventListener("click", function () { setHash({show: "all"}); });
  for (var h = 0; h < heads.length; h++) {
    if (!heads[h].dataset.sort) continue;
    heads[h].title = "Sort by this column (click again to reverse)";
    heads[h].addEventListener("click", function () {
      var now = this.getAttribute("aria-sort"), dir = now === "descending" ? "asc" :
        now === "ascending" ? "desc" : (this.dataset.dir || "asc");
      setHash({sort: this.dataset.sort, dir: dir});
    });
  }
  q.addEventListener("input", function () { setHash({q: q.value}); });
  label.addEventListener("change", function () { setHash({label: label.value}); });
  window.addEventListener("hashchange", apply);
  apply();
  if (!params().has("selfcheck")) return;
  // ---- #selfcheck: the page's own timings and image checks, for a headless browser ----
  var out = {rows: rows.length, parsed_ms: parsed, ready_ms: 0, sort_ms: []};
  var asked = location.hash;
  document.body.offsetHeight;  // layout included in the timings
  out.ready_ms = performance.now();
  ["file", "p", "file"].forEach(function (name) {
    var i = column(name);
    if (i < 0) return;
    var t = performance.now();
    heads[i].click();
    document.body.offsetHeight;
    out.sort_ms.push(performance.now() - t);
  });
  history.replaceState(null, "", asked);  // back to the view the address asked for
  apply();
  out.order = Array.prototype.slice.call(body.rows).filter(function (r) {
    return !r.hidden; }).slice(0, 50).map(function (r) { return r.dataset.path; });
  out.shown = shown.textContent;
  var result = document.getElementById("selfcheck-result");
  result.textContent = JSON.stringify(out);
  if (params().get("selfcheck") === "timing") return;
  var images = Array.prototype.slice.call(document.querySelectorAll("tr:not([hidden]) img"));
  images.forEach(function (img) { img.loading = "eager"; });
  Promise.all(images.map(function (img) {
    return img.complete ? null : new Promise(function (done) {
      img.addEventListener("load", done); img.addEventListener("error", done); });
  })).then(function () {
    out.images = images.length;
    out.loaded = images.filter(function (i) { return i.naturalWidth > 0; }).length;
    result.textContent = JSON.stringify(out);
  });
})();
""".strip()


def _e(value: Any) -> str:
    return html.escape(str(value), quote=True)


def _short_hash(record: dict[str, Any] | None) -> str:
    sha = (record or {}).get("sha256")
    return f" <code>sha256 {_e(str(sha)[:12])}</code>" if sha else ""


def _model_line(name: str, record: dict[str, Any] | None) -> str:
    if not record:
        return ""
    where = Path(str(record.get("path", "?"))).name or str(record.get("path"))
    folds = f" ({len(record['folds'])}-fold ensemble)" if record.get("ensemble") else ""
    return f"{name} <b>{_e(where)}</b>{_e(folds)}{_short_hash(record)}"


def _provenance(record: dict[str, Any], fused: bool) -> list[str]:
    """The header's lines about what wrote the predictions (predict.json)."""
    models = record.get("models") or {}
    first = [_model_line("classifier", models.get("cls")),
             _model_line("segmenter", models.get("seg"))]
    fusion = record.get("fusion") or None
    if fusion:
        first.append("fused with the lesion descriptors" + _short_hash(fusion))
        if fusion.get("partner"):
            first.append(_model_line("and", fusion["partner"]))
    settings = []
    if record.get("threshold") is not None:
        settings.append(f"threshold <b>{_e(_fmt(record['threshold']))}</b>" +
                        (" (classifier)" if fused else ""))
    if fused and fusion and fusion.get("threshold") is not None:
        settings.append(f"fused threshold <b>{_e(_fmt(fusion['threshold']))}</b>")
    if models.get("seg"):
        settings.append(f"mask threshold {_e(_fmt(record.get('seg_threshold')))}")
        settings.append(f"post-processing {_e(record.get('seg_postprocess') or 'none')}")
    settings.append(f"TTA {_e(record.get('tta') or 'none')}")
    settings.append(f"engine {_e(record.get('engine') or 'keras')}")
    return [" · ".join(x for x in first if x), " · ".join(settings)]


def _fmt(value: Any, digits: int = 3) -> str:
    try:
        return f"{float(value):.{digits}f}".rstrip("0").rstrip(".") if digits else str(value)
    except (TypeError, ValueError):
        return str(value)


def _img(src: str | None, size: tuple[int, int], alt: str, link: str | None = None,
         later: bool = False) -> str:
    """A thumbnail cell; ``later``: its address in data-src, set by the script when its row is
    shown (an <img> with a src costs the parser about 1 ms even in a hidden row: 2,000 rows
    took 4 s instead of 1 s to open on a loaded 2-core machine)."""
    if not src:
        return '<td class="img none">—</td>'
    tag = (f'<img loading="lazy" {"data-src" if later else "src"}="{_e(quote(src))}" '
           f'width="{size[0]}" height="{size[1]}" alt="{_e(alt)}">')
    if link:
        tag = f'<a href="{_e(quote(link))}">{tag}</a>'
    return f'<td class="img">{tag}</td>'


def _unlike_training(row: ReviewRow) -> bool:
    """Flagged out of domain: in_domain false, or (without that column) an ood_score over 1."""
    return row.in_domain is False or (row.in_domain is None and row.ood_score is not None
                                      and row.ood_score > 1)


def _cells(row: ReviewRow, later: bool = False) -> dict[str, str]:
    """The row's cells by column (:func:`_columns`)."""
    name = Path(row.path).name + (f" [frame {row.frame}]" if row.frame else "")
    label = _e(row.label) if row.label in ("malignant", "benign") else ""
    empty = '<td class="num none" data-v="">—</td>'
    cells = {
        "scan": _img(row.scan_thumb, row.thumb_size, f"scan {name}", later=later),
        "overlay": _img(row.overlay_thumb, row.thumb_size, f"overlay {name}", row.overlay_link,
                        later),
        "file": f'<td class="file" data-v="{_e(row.path)}\t{_e(row.frame.zfill(6))}">'
                f'{_e(name)}<span class="dir">{_e(Path(row.path).parent)}</span></td>',
        "p": empty, "label": empty, "area": empty,
        "why": '<td class="why">' + "".join(
            f'<span class="{"up" if value.startswith("+") else "down"}">{_e(descriptor)} '
            f"{_e(value)}</span>" for descriptor, value in row.reasons) + "</td>",
    }
    if row.p is not None:
        sub = (f'<span class="sub">classifier {row.p_classifier:.3f}</span>'
               if row.p_classifier is not None else "")
        cells["p"] = (f'<td class="num" data-v="{row.p:.6f}">{row.p:.3f}<span class="bar">'
                      f'<i style="width:{100 * min(max(row.p, 0.0), 1.0):.0f}%"></i></span>'
                      f"{sub}</td>")
    if row.label:
        cells["label"] = (f'<td data-v="{_e(row.label)}"><span class="badge {label}">'
                          f"{_e(row.label)}</span></td>")
    if row.area is not None:
        digits = 0 if row.area_unit == "px" else 1
        cells["area"] = (f'<td class="num" data-v="{row.area:g}">{row.area:,.{digits}f} '
                         f"{row.area_unit}</td>")
    score = "" if row.ood_score is None else f"{row.ood_score:.2f}"
    flag = ('<span class="badge ood">unlike training</span>' if _unlike_training(row) else
            "in domain" if row.in_domain is not None or score else "")
    cells["ood"] = (f'<td class="num" data-v="{score}">{flag}' +
                    (f'<span class="sub">score {score}</span>' if score else "") + "</td>")
    return cells


def _row_html(row: ReviewRow, columns: list[str], hidden: bool = False) -> str:
    cells = _cells(row, later=hidden)
    label = _e(row.label) if row.label in ("malignant", "benign") else ""
    return (f'<tr data-label="{label}" data-ood="{int(_unlike_training(row))}" '
            f'data-path="{_e(row.path)}{_e("#" + row.frame if row.frame else "")}"'
            f'{" hidden" if hidden else ""}>' +
            "".join(cells[c] for c in columns) + "</tr>")


def _columns(csv_columns: list[str], rows: list[ReviewRow]) -> list[str]:
    """The page's columns: each only where a row has something for it (a segmenter alone
    gives no score, a classifier alone no overlay nor area, no fusion no reasons, a
    classifier without feature statistics no ood score)."""
    shown = ["scan"] + (["overlay"] if any(r.overlay_thumb for r in rows) else []) + ["file"]
    shown += ["p", "label"] if any(r.p is not None for r in rows) else []
    shown += ["why"] if any(r.reasons for r in rows) else []
    shown += ["area"] if any(r.area is not None for r in rows) else []
    return shown + (["ood"] if any(r.ood_score is not None or r.in_domain is not None
                                   for r in rows) else [])


def render_page(out: Path, record: dict[str, Any], csv_columns: list[str],
                rows: list[ReviewRow], errors: list[dict[str, str]]) -> str:
    """The page's HTML (every text escaped)."""
    fused = any(r.p_classifier is not None for r in rows)
    columns = _columns(csv_columns, rows)
    show_ood, has_p = "ood" in columns, "p" in columns
    malignant = sum(r.label == "malignant" for r in rows)
    unlike = sum(_unlike_training(r) for r in rows)
    titles = {
        "scan": "<th>Scan</th>", "overlay": "<th>Overlay</th>",
        "file": '<th data-sort="file" data-dir="asc">File</th>',
        "p": f'<th data-sort="p" data-type="num" data-dir="desc" aria-sort="descending">'
             f'{"p(malignant), fused" if fused else "p(malignant)"}</th>',
        "label": '<th data-sort="label" data-dir="desc">Label</th>',
        "why": '<th title="the lesion descriptors that moved the fused score most, in log-odds">'
               'Why (descriptors)<span class="sub">red: towards malignant</span></th>',
        "area": '<th data-sort="area" data-type="num" data-dir="desc">Lesion area</th>',
        "ood": '<th data-sort="ood" data-type="num" data-dir="desc" title="distance from the '
               'training scans; above 1: unlike training">Domain</th>'}
    heads = [titles[c] for c in columns]
    counts = [f"<b>{len(rows)}</b> scan{'s' if len(rows) != 1 else ''}"]
    if has_p:
        counts.append(f'<span class="badge malignant">{malignant} malignant</span>')
        counts.append(f'<span class="badge benign">'
                      f'{sum(r.label == "benign" for r in rows)} benign</span>')
    if show_ood:
        counts.append(f'<span class="badge ood">{unlike} unlike training</span>')
    if errors:
        counts.append(f'<a href="#errors">{len(errors)} could not be read</a>')
    options = ['<option value="">all labels</option>', '<option value="malignant">malignant'
               '</option>', '<option value="benign">benign</option>']
    if show_ood:
        options.append('<option value="ood">unlike training</option>')
    prov = "".join(f'<p class="prov">{line}</p>' for line in _provenance(record, fused) if line)
    created = record.get("created", "")
    body_rows = "\n".join(_row_html(r, columns, n >= PAGE_ROWS) for n, r in enumerate(rows))
    error_rows = "\n".join(f"<tr><td class=\"file\">{_e(e.get('path', ''))}</td>"
                           f"<td>{_e(e.get('reason', ''))}</td></tr>" for e in errors)
    error_part = (f'<h2 id="errors">Files that could not be read ({len(errors)})</h2>\n'
                  f'<table class="errors"><thead><tr><th>File</th><th>Why</th></tr></thead>'
                  f"<tbody>\n{error_rows}\n</tbody></table>" if errors else "")
    title = f"breastus review: {out.name}"
    return "\n".join([
        "<!DOCTYPE html>", '<html lang="en">', "<head>", '<meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        # nothing may load from outside the folder: scripts and styles only inline
        '<meta http-equiv="Content-Security-Policy" content="default-src \'none\'; '
        "img-src 'self' file: data:; style-src 'unsafe-inline'; script-src 'unsafe-inline'\">",
        f"<title>{_e(title)}</title>", f"<style>\n{_CSS}\n</style>",
        "<noscript><style>#scans tr[hidden] { display: table-row; }</style></noscript>",
        "</head>", "<body>",
        "<header>", f"<h1>{_e(title)}</h1>",
        f'<p class="meta">{_e(out.resolve())} · predicted {_e(created)} by breastus '
        f'{_e(record.get("breastus_version", "?"))} · this page written '
        f'{_e(time.strftime("%Y-%m-%dT%H:%M:%S%z"))} by breastus {_e(__version__)}</p>',
        prov, f'<p class="counts">{" · ".join(counts)}</p>',
        f'<noscript><p class="meta">Without JavaScript the rows cannot be sorted nor '
        f"filtered, and the rows after the first {PAGE_ROWS} show no thumbnails.</p></noscript>"
        '<div class="controls"><input id="q" type="search" placeholder="Filter: file name, '
        'label, descriptor" aria-label="filter rows">'
        f'<select id="label" aria-label="label filter">{"".join(options)}</select>'
        f'<span id="shown">Showing {len(rows)} of {len(rows)}</span></div>', "</header>",
        f'<table id="scans" data-sort="{"p" if has_p else "file"}" data-page="{PAGE_ROWS}" '
        f'data-sorted="{"p desc" if has_p else ""}">'
        f'<colgroup>{"".join(f"<col class=c-{c}>" for c in columns)}</colgroup><thead><tr>'
        f'{"".join(heads)}</tr></thead><tbody>', body_rows, "</tbody></table>",
        '<p id="more" hidden><button type="button">Show more</button><button type="button">'
        "Show all</button></p>", error_part,
        '<footer>Model outputs for a clinician to review; not a diagnosis. Rewrite this page '
        f"with: <code>breastus review {_e(out)}</code>"
        '<pre id="selfcheck-result" hidden></pre></footer>',
        f"<script>\n{_JS}\n</script>", "</body>", "</html>"]) + "\n"


def write_review_page(out: str | os.PathLike[str], workers: int = 2) -> ReviewPage:
    """Write ``OUT/index.html`` and ``OUT/thumbs/`` for a predict output folder (predict.json).

    Thumbnails still newer than their scan are kept; those of rows no longer in predictions.csv
    are removed. A scan that cannot be read any more keeps its row, without a picture.

    >>> write_review_page("out")  # doctest: +SKIP
    """
    start = time.perf_counter()
    out = Path(out)
    record = read_marker(out, "predict")
    if record is None:
        raise InputError(f"{out} holds no predict.json: not a folder breastus predict wrote",
                         hint="give the --out folder of a 'breastus predict' run")
    claim(out, "predict", option="")  # the one ownership rule: no link inside leading out
    columns, cells = _read_csv(out / PREDICTIONS)
    if not columns:
        raise InputError(f"{out / PREDICTIONS} is missing or empty: nothing to review")
    rows = review_rows(columns, cells)
    by_key = {(c.get("path", ""), c.get("frame", "")): c for c in cells}
    pairs = [(r, by_key[(r.path, r.frame)]) for r in rows]
    written, kept, missing = _make_thumbs(out, pairs, workers)
    errors = sorted(_read_csv(out / ERRORS)[1], key=lambda e: e.get("path", ""))
    page = write_text(out / PAGE, render_page(out, record, columns, rows, errors))
    return ReviewPage(path=page, rows=len(rows), errors=len(errors), thumbs_written=written,
                      thumbs_kept=kept, seconds=round(time.perf_counter() - start, 2),
                      missing_images=missing)

