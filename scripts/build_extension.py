#!/usr/bin/env python3
# SPDX-License-Identifier: GPL-3.0-or-later
"""Build the installable Blender extension zip.

Stages ``addon/`` + ``blender_manifest.toml`` + the backend's format module
``backend/headcast/io/result_file.py`` (copied in as ``result_file.py``; the one definition of
the format, never a hand-kept duplicate) into ``<out>/headcast/`` and zips it as
``<out>/headcast-<version>.zip`` with the files at the archive root, as Blender's own
``extension build`` does. Needs only the standard library.

    python scripts/build_extension.py [--out build/extension] [--stage-only]
"""
from __future__ import annotations

import argparse
import re
import shutil
import sys
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
ADDON = ROOT / "addon"
MANIFEST = ROOT / "blender_manifest.toml"
FORMAT_MODULE = ROOT / "backend" / "headcast" / "io" / "result_file.py"
BACKEND_REQUIREMENTS = ("backend.txt", "backend-nodeps.txt", "constraints.txt")
EXCLUDE_DIRS = {"__pycache__", ".git", ".pytest_cache"}
EXCLUDE_SUFFIXES = {".pyc", ".pyo", ".zip", ".blend1"}


def manifest_field(text: str, key: str) -> str:
    match = re.search(rf'^{key}\s*=\s*"([^"]*)"', text, flags=re.MULTILINE)
    if not match:
        raise SystemExit(f"{MANIFEST}: no {key} = \"...\" line")
    return match.group(1)


def backend_version() -> str:
    text = (ROOT / "backend" / "headcast" / "__init__.py").read_text()
    match = re.search(r'^__version__\s*=\s*"([^"]+)"', text, flags=re.MULTILINE)
    return match.group(1) if match else ""


def stage(out: Path) -> Path:
    """Copy the extension's files into ``out/<id>`` (replacing what was there); return that folder."""
    text = MANIFEST.read_text()
    ext_id = manifest_field(text, "id")
    target = out / ext_id
    if target.exists():
        shutil.rmtree(target)
    target.mkdir(parents=True)
    for src in sorted(ADDON.rglob("*")):
        rel = src.relative_to(ADDON)
        if any(part in EXCLUDE_DIRS for part in rel.parts) or src.suffix in EXCLUDE_SUFFIXES:
            continue
        if src.is_dir():
            (target / rel).mkdir(exist_ok=True)
        else:
            (target / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, target / rel)
    if (target / "result_file.py").exists():
        raise SystemExit(f"{ADDON}/result_file.py must not exist: the format module comes from {FORMAT_MODULE}")
    shutil.copy2(FORMAT_MODULE, target / "result_file.py")
    shutil.copy2(MANIFEST, target / "blender_manifest.toml")
    # what Set Up Backend installs (the same files scripts/setup_env.sh uses)
    (target / "requirements").mkdir()
    for name in BACKEND_REQUIREMENTS:
        shutil.copy2(ROOT / "requirements" / name, target / "requirements" / name)
    return target


def build_zip(staged: Path, out: Path) -> Path:
    """Zip the staged folder's contents at the archive root, in a stable order."""
    text = (staged / "blender_manifest.toml").read_text()
    zip_path = out / f"{manifest_field(text, 'id')}-{manifest_field(text, 'version')}.zip"
    with zipfile.ZipFile(zip_path, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        for path in sorted(staged.rglob("*")):
            if path.is_file():
                zf.write(path, path.relative_to(staged).as_posix())
    return zip_path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=ROOT / "build" / "extension", help="output folder")
    parser.add_argument("--stage-only", action="store_true", help="stage the folder, do not zip")
    args = parser.parse_args(argv)
    version = manifest_field(MANIFEST.read_text(), "version")
    if backend_version() and backend_version() != version:
        print(f"warning: manifest version {version} differs from headcast {backend_version()}", file=sys.stderr)
    args.out.mkdir(parents=True, exist_ok=True)
    staged = stage(args.out)
    print(f"staged {staged}")
    if not args.stage_only:
        print(f"built {build_zip(staged, args.out)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
