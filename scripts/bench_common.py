# SPDX-License-Identifier: GPL-3.0-or-later
"""What every benchmark script shares: the machine's description and the BENCHMARKS.md section writer."""
from __future__ import annotations

import os
import platform
import re
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


def load_average() -> float | None:
    """The 1-minute load average (above ~0.5 on an idle 2-core machine means other jobs share it)."""
    try:
        return os.getloadavg()[0]
    except (AttributeError, OSError):
        return None


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
