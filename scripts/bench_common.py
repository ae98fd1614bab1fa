# SPDX-License-Identifier: GPL-3.0-or-later
"""What every benchmark script shares: the machine's description and the BENCHMARKS.md section writer."""
from __future__ import annotations

import platform
import re
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BENCHMARKS = ROOT / "BENCHMARKS.md"


def cpu_name() -> str:
    """The CPU's model name (from /proc/cpuinfo on Linux)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown CPU"


def timed(fn, repeats: int, warmup: int = 0) -> list[float]:
    """Wall times in seconds of ``repeats`` calls of ``fn``, after ``warmup`` untimed ones."""
    for _ in range(warmup):
        fn()
    out = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        out.append(time.perf_counter() - t0)
    return out


def write_section(path: Path, heading: str, body: str) -> None:
    """Replace the ``heading`` section of a Markdown file (up to the next ``## ``), or append it;
    every other section is kept. ``body`` starts with the heading line itself."""
    text = path.read_text() if path.exists() else "# Benchmarks\n"
    pattern = re.compile(rf"^{re.escape(heading)}\n.*?(?=^## |\Z)", re.S | re.M)
    if pattern.search(text):
        text = pattern.sub(lambda _m: body.rstrip("\n") + "\n\n", text, count=1)
    else:
        text = text.rstrip("\n") + "\n\n" + body
    path.write_text(text.rstrip("\n") + "\n")


def publish(heading: str, lines: list[str], notes: str = "", write: bool = False, path: Path = BENCHMARKS) -> str:
    """Print a section (its lines, then its notes) and, with ``write``, put it into ``path``
    in place of the ``heading`` section. Returns the section's text."""
    body = "\n".join(lines + (["", notes] if notes else [])) + "\n"
    print(body)
    if write:
        write_section(path, heading, body)
    return body
