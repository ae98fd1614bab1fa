# SPDX-License-Identifier: GPL-3.0-or-later
"""The built zip is a valid extension; installing/enabling registers everything, disabling removes it."""
import ast
import subprocess
import sys
import zipfile
from pathlib import Path

from blender_checks import MODULE, ROOT


def test_built_zip_passes_blenders_validator(bpy, extension_zip):
    # Blender's own validator ships inside the bpy wheel that runs the tests
    validator = Path(bpy.utils.system_resource("SCRIPTS")) / "addons_core/bl_pkg/cli/blender_ext.py"
    run = subprocess.run([sys.executable, str(validator), "validate", str(extension_zip)],
                         capture_output=True, text=True, timeout=60)
    assert run.returncode == 0, run.stdout + run.stderr
    with zipfile.ZipFile(extension_zip) as zf:
        names = set(zf.namelist())
        assert {"blender_manifest.toml", "__init__.py", "operators.py", "result_file.py",
                "blender/importer.py"} <= names
        assert not any("__pycache__" in n or n.endswith(".pyc") for n in names)
        # the format module is the backend's file, byte for byte
        assert zf.read("result_file.py") == (ROOT / "backend/headcast/io/result_file.py").read_bytes()
        manifest = zf.read("blender_manifest.toml").decode()
    version = next(line.split('"')[1] for line in manifest.splitlines() if line.startswith("version"))
    backend = (ROOT / "backend/headcast/__init__.py").read_text()
    assert f'__version__ = "{version}"' in backend
    assert 'files = "' in manifest  # footage and results need the files permission


def test_extension_code_never_imports_torch_or_the_backend(extension_zip):
    with zipfile.ZipFile(extension_zip) as zf:
        for name in zf.namelist():
            if not name.endswith(".py"):
                continue
            tree = ast.parse(zf.read(name))
            for node in ast.walk(tree):
                mods = ([a.name for a in node.names] if isinstance(node, ast.Import)
                        else [node.module or ""] if isinstance(node, ast.ImportFrom) and node.level == 0 else [])
                for mod in mods:
                    assert mod.split(".")[0] not in {"torch", "headcast", "scipy", "cv2"}, (name, mod)


def test_install_registers_every_class_and_the_menu(bpy, addon):
    assert MODULE in bpy.context.preferences.addons
    assert addon.CLASSES
    for cls in addon.CLASSES:
        assert cls.is_registered, cls
    assert hasattr(bpy.types, "HEADCAST_OT_import_result")
    assert bpy.ops.headcast.import_result.get_rna_type().identifier == "HEADCAST_OT_import_result"
    assert addon.operators.menu_import in bpy.types.TOPBAR_MT_file_import._dyn_ui_initialize()


def test_disable_unregisters_cleanly_and_enable_restores(bpy, addon):
    import addon_utils

    classes = addon.CLASSES
    menu = addon.operators.menu_import
    addon_utils.disable(MODULE, default_set=True)
    try:
        assert MODULE not in bpy.context.preferences.addons
        for cls in classes:
            assert not cls.is_registered, cls
        assert not hasattr(bpy.types, "HEADCAST_OT_import_result")
        assert not hasattr(bpy.types, "HEADCAST_PT_main")
        assert menu not in bpy.types.TOPBAR_MT_file_import._dyn_ui_initialize()
    finally:
        addon_utils.enable(MODULE, default_set=True)
    module = sys.modules[MODULE]
    assert all(cls.is_registered for cls in module.CLASSES)
    assert hasattr(bpy.types, "HEADCAST_OT_import_result")
