"""report.md and report.html writers for evaluation, cross-validation and sweep results.

Both files carry the same content: a title, a summary table of (metric, value) rows, free text
sections, figures, notes, and, last, the command that reproduces the report. The HTML page is
self-contained (inline CSS, no scripts, no network) and refers to its images by relative file
name, so the output folder can be moved or zipped and still displays.
"""

from __future__ import annotations

import html
import os
import re
from collections.abc import Sequence
from pathlib import Path
from urllib.parse import quote

from breastus_cli import __version__
from breastus_cli.atomic import write_text

_IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".svg", ".gif", ".webp"}


def format_ci(
    value: float | None, ci: Sequence[float | None] | None, digits: int = 3, *, level: float = 0.95
) -> str:
    """``0.842 (95% CI 0.771–0.903)``; just ``0.842`` without a CI; ``n/a`` without a value."""
    if value is None or value != value:  # None or NaN
        return "n/a"
    text = f"{value:.{digits}f}"
    if ci is not None and len(ci) == 2 and all(v is not None and v == v for v in ci):
        text += f" ({level * 100:g}% CI {ci[0]:.{digits}f}\u2013{ci[1]:.{digits}f})"
    return text


# --------------------------------------------------------------------------------------------
# markdown


def _md_cell(text: str) -> str:
    return str(text).replace("\\", "\\\\").replace("|", "\\|").replace("\n", " ")


def _fence(code: str) -> str:
    """A backtick fence longer than any backtick run inside ``code``."""
    longest = max((len(m) for m in re.findall(r"`+", code)), default=0)
    return "`" * max(3, longest + 1)


def _markdown(
    title: str,
    summary_rows: Sequence[tuple[str, str]],
    sections: Sequence[tuple[str, str]],
    figures: Sequence[tuple[str, str]],
    command: str | None,
    notes: Sequence[str],
) -> str:
    out = [f"# {title}", "", f"*Written by breastus {__version__}.*", ""]
    if summary_rows:
        out += ["| Metric | Value |", "| --- | --- |"]
        out += [f"| {_md_cell(k)} | {_md_cell(v)} |" for k, v in summary_rows]
        out.append("")
    for heading, body in sections:
        out += [f"## {heading}", "", body.strip("\n"), ""]
    if figures:
        out += ["## Figures", ""]
        for name, caption in figures:
            alt = caption.replace("[", "(").replace("]", ")")
            out += [f"![{alt}]({quote(name)})", "", f"*{caption}*", ""]
    if notes:
        out += ["## Notes", ""]
        out += [f"- {note}" for note in notes]
        out.append("")
    cmd = command if command else "# not recorded: this report was written without a command line"
    fence = _fence(cmd)
    out += ["## Reproduce", "", f"{fence}bash", cmd, fence]
    return "\n".join(out) + "\n"


# --------------------------------------------------------------------------------------------
# HTML

_CSS = """
body { font-family: -apple-system, "Segoe UI", Roboto, Helvetica, Arial, sans-serif;
       color: #222; background: #fff; margin: 0; line-height: 1.45; }
main { max-width: 980px; margin: 0 auto; padding: 1.5rem 1.25rem 3rem; }
h1 { font-size: 1.6rem; margin-bottom: 0.2rem; }
h2 { font-size: 1.25rem; border-bottom: 1px solid #ddd; padding-bottom: 0.2rem; margin-top: 2rem; }
.meta { color: #666; font-size: 0.9rem; margin-top: 0; }
table { border-collapse: collapse; margin: 0.8rem 0; font-size: 0.95rem; }
th, td { border: 1px solid #ccc; padding: 0.3rem 0.7rem; text-align: left; vertical-align: top; }
th { background: #f0f3f7; }
tbody tr:nth-child(even) { background: #fafbfc; }
table.summary td:first-child { font-weight: 600; }
code { font-family: "SFMono-Regular", Menlo, Consolas, monospace; font-size: 0.9em;
       background: #f4f4f4; padding: 0.05rem 0.25rem; border-radius: 3px; }
pre { background: #f4f4f4; padding: 0.8rem; overflow-x: auto; border-radius: 4px; }
pre code { padding: 0; background: none; }
figure { margin: 1rem 0 1.5rem; }
figure img { max-width: 100%; height: auto; border: 1px solid #eee; }
figcaption { color: #555; font-size: 0.9rem; }
""".strip()

def _render_markdown(text: str) -> str:
    """CommonMark + pipe tables with markdown-it-py; raw HTML in the text is escaped, never
    passed through, so arbitrary report content cannot inject markup."""
    from markdown_it import MarkdownIt

    return MarkdownIt("commonmark", {"html": False}).enable("table").render(text)


def _html(title: str, markdown: str, has_summary: bool) -> str:
    """A self-contained page (inline CSS, no scripts) around the rendered ``markdown``."""
    body = _render_markdown(markdown)
    if has_summary:  # the first table is the summary (metric, value): styled apart
        body = body.replace("<table>", '<table class="summary">', 1)
    body = body.replace("<p><em>Written by", '<p class="meta"><em>Written by', 1)
    return "\n".join([
        "<!DOCTYPE html>",
        '<html lang="en">',
        "<head>",
        '<meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>{html.escape(title)}</title>",
        f"<style>\n{_CSS}\n</style>",
        "</head>",
        "<body>",
        "<main>",
        body.rstrip("\n"),
        "</main>",
        "</body>",
        "</html>",
    ]) + "\n"


# --------------------------------------------------------------------------------------------
# public API


def _check_figures(figures: Sequence[tuple[str, str]]) -> list[tuple[str, str]]:
    checked = []
    for item in figures:
        if len(item) != 2:
            raise ValueError(f"a figure is (file name, caption), got {item!r}")
        name, caption = str(item[0]), str(item[1])
        # Catches a swapped (caption, file name) tuple and absolute paths, which would break
        # the report once the folder is moved.
        if Path(name).suffix.lower() not in _IMAGE_SUFFIXES:
            raise ValueError(
                f"figure file name {name!r} is not an image; figures are (file, caption)"
            )
        if os.path.isabs(name) or name.startswith(".."):
            raise ValueError(f"figure {name!r} must be a path relative to the report folder")
        checked.append((Path(name).as_posix(), caption))
    return checked


def write_report(
    out_dir: str | os.PathLike[str],
    *,
    title: str,
    summary_rows: Sequence[tuple[str, str]],
    sections: Sequence[tuple[str, str]] = (),
    figures: Sequence[tuple[str, str]] = (),
    command: str | None = None,
    notes: Sequence[str] = (),
) -> tuple[Path, Path]:
    """Write ``out_dir/report.md`` and ``out_dir/report.html`` atomically; return both paths.

    - ``summary_rows``: (metric name, formatted value), e.g. ``("AUC", format_ci(auc, ci))``;
    - ``sections``: (heading, markdown text); report.html is report.md rendered by
      markdown-it-py (CommonMark and pipe tables; raw HTML is escaped);
    - ``figures``: (image file name relative to ``out_dir``, caption), e.g. ``("roc.png", "ROC")``;
    - ``notes``: bullet points (caveats: small test set, threshold chosen on validation, ...);
    - ``command``: the shell command that reproduces the report; both files end with it under a
      "Reproduce" heading.
    """
    out = Path(out_dir)
    rows = [(str(k), str(v)) for k, v in summary_rows]
    secs = [(str(h), str(b)) for h, b in sections]
    figs = _check_figures(figures)
    note_list = [str(n) for n in notes]
    markdown = _markdown(title, rows, secs, figs, command, note_list)
    md_path = write_text(out / "report.md", markdown)
    html_path = write_text(out / "report.html", _html(title, markdown, bool(rows)))
    return md_path, html_path
