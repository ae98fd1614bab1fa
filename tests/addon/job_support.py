# SPDX-License-Identifier: GPL-3.0-or-later
"""The backend the add-on's job tests run: its interpreter and light fitting settings.

(Kept out of conftest.py so test modules can import it: several conftest modules share that name.)
"""
import os
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
BACKEND_PYTHON = os.environ.get("HEADCAST_BACKEND_PYTHON", str(ROOT / ".venv" / "bin" / "python"))
# Light fitting settings (as tests/service's FAST, plus no clip-wide pass): these tests prove the
# add-on's plumbing and contracts; accuracy belongs to the fitting's own tests.
FAST_ENV = {"HEADCAST_FIT_RENDER_SIZE": "128", "HEADCAST_FIT_STEPS": "30", "HEADCAST_FIT_CAMERA_STEPS": "30",
            "HEADCAST_FIT_FIRST_FRAME_STEPS": "30", "HEADCAST_FIT_ONLINE_STEPS": "10",
            "HEADCAST_FIT_GLOBAL_EPOCHS": "0"}
