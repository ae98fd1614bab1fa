# SPDX-License-Identifier: GPL-3.0-or-later
"""Render a quick preview sheet of a head model (neutral, turned, random identity, open jaw).

Usage: python scripts/render_preview.py MODEL_FILE_OR_DIR OUT.png
Uses Headcast's own rasterizer when available, so the picture shows what the fitting sees.
"""
import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "backend"))
from headcast.flame import HeadLayer, axis_angle_to_matrix, load_head_model, vertex_normals  # noqa: E402


def shade(model, layer, shape, expr, aa, size=256):
    """Lambert-shaded grey image of the posed head from a camera 1 m in front of it."""
    from headcast.render import interpolate, rasterize

    out = layer(shape, expr, axis_angle_to_matrix(aa))
    v = out.vertices
    cam = torch.stack([v[..., 0], -(v[..., 1] + 0.03), 1.0 - v[..., 2]], dim=-1)  # OpenCV camera at z = +1 m
    f = 3.6 * size
    screen = torch.stack([f * cam[..., 0] / cam[..., 2] + size / 2, f * cam[..., 1] / cam[..., 2] + size / 2, cam[..., 2]], -1)
    faces = torch.as_tensor(model.faces)
    raster = rasterize(screen.float(), faces, (size, size))
    normals = interpolate(vertex_normals(v, faces).float(), raster, faces)
    light = torch.tensor([0.3, 0.4, 0.85]) / np.linalg.norm([0.3, 0.4, 0.85])
    img = (normals * light).sum(-1).clamp(0, 1) * 0.8 + 0.15
    img = torch.where(raster.face_id >= 0, img, torch.ones_like(img))
    return img[0].detach().numpy()


def main(model_path: str, out_png: str) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    model = load_head_model(model_path)
    layer = HeadLayer(model, dtype=torch.float64)
    rng = np.random.default_rng(1)
    zero_s, zero_e = torch.zeros(1, layer.n_shape, dtype=torch.float64), torch.zeros(1, layer.n_expr, dtype=torch.float64)
    views = []
    for title, shape, expr, pose in (
            ("neutral", zero_s, zero_e, {}),
            ("turned", zero_s, zero_e, {(0, 1): 0.6}),
            ("random identity + expression", torch.tensor(rng.normal(size=(1, layer.n_shape))) * 1.5,
             torch.tensor(rng.normal(size=(1, layer.n_expr))) * 1.5, {(0, 1): 0.3}),
            ("jaw open, neck turned", zero_s, zero_e, {(2, 0): 0.3, (1, 1): -0.4})):
        aa = torch.zeros(1, model.n_joints, 3, dtype=torch.float64)
        for (j, axis), value in pose.items():
            aa[0, j, axis] = value
        views.append((title, shade(model, layer, shape, expr, aa)))
    fig, axs = plt.subplots(1, len(views), figsize=(4 * len(views), 4.3))
    for ax, (title, img) in zip(axs, views):
        ax.imshow(img, cmap="gray", vmin=0, vmax=1)
        ax.set_title(title)
        ax.axis("off")
    fig.suptitle(f"{model.name} — {model.licence}")
    fig.tight_layout()
    fig.savefig(out_png, dpi=80)
    print(f"wrote {out_png}")


if __name__ == "__main__":
    main(*sys.argv[1:3])
