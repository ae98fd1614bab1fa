# SPDX-License-Identifier: GPL-3.0-or-later
"""The requirement files the setup script and the add-on's Set Up Backend install cover the package's
declared dependencies (which both install with --no-deps)."""
import re
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _names(lines):
    out = set()
    for line in lines:
        line = line.split("#", 1)[0].strip()
        if line and not line.startswith("-"):
            out.add(re.split(r"[<>=!;\[ ]", line, maxsplit=1)[0].lower().replace("_", "-"))
    return out


def test_backend_requirements_cover_the_declared_dependencies():
    declared = _names(tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"])
    listed = _names((ROOT / "requirements" / "backend.txt").read_text().splitlines())
    nodeps = _names((ROOT / "requirements" / "backend-nodeps.txt").read_text().splitlines())
    assert declared - {"torch"} <= listed | nodeps, declared - listed - nodeps
    assert {"mediapipe", "anny"} <= nodeps
    assert "-r backend.txt" in (ROOT / "requirements" / "test.txt").read_text()
