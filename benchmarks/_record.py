"""Write a benchmark's result table into its section of BENCHMARKS.md (between markers)."""

from __future__ import annotations

import os
import platform
import time
from pathlib import Path

BENCHMARKS = Path(__file__).resolve().parents[1] / "BENCHMARKS.md"


def machine() -> str:
    return (f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
            f"Python {platform.python_version()}, {time.strftime('%Y-%m-%d')}")


def record(section: str, body: str) -> None:
    """Replace the text between ``<!-- SECTION -->`` and ``<!-- /SECTION -->`` in BENCHMARKS.md."""
    text = BENCHMARKS.read_text() if BENCHMARKS.exists() else "# Benchmarks\n"
    start, end = f"<!-- {section} -->", f"<!-- /{section} -->"
    block = f"{start}\nMachine: {machine()}.\n\n{body}\n{end}"
    if start in text and end in text:
        before, rest = text.split(start, 1)
        _, after = rest.split(end, 1)
        text = before + block + after
    else:
        text = text.rstrip() + f"\n\n## {section.replace('_', ' ').title()}\n\n{block}\n"
    tmp = BENCHMARKS.with_suffix(".md.tmp")
    tmp.write_text(text)
    os.replace(tmp, BENCHMARKS)
