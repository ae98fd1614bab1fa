# SPDX-License-Identifier: GPL-3.0-or-later
"""Blender-side code: builds scene data from a result. The format itself lives in ``result_file``.

Split as in Blender's glTF add-on: ``result_file`` (format, numpy only) is shared with the
backend; these modules turn a validated result into meshes, bones, cameras and keys.
"""
