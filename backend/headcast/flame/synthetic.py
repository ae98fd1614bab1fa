# SPDX-License-Identifier: GPL-3.0-or-later
"""A synthetic FLAME-format head model built entirely from Headcast's own geometry.

FLAME itself cannot be shipped, so tests and the demo use this stand-in. It has FLAME's
layout (five joints global/neck/jaw/eyes, 300 identity + 100 expression columns, 36 pose
correctives, a sparse joint regressor, skinning weights, a seamed uv layout, region masks and
iBUG-68 landmark embeddings with a yaw-dependent contour) and roughly FLAME's size
(about 5k vertices and 10k triangles, metres, +y up, +z toward the face, +x subject's left).

Construction:

* the skin is a star-shaped surface around a point inside the skull: every grid direction
  (polar row, longitude column) is ray-marched against a smooth signed-distance head made of
  ellipsoids (cranium, face, jaw, neck, nose, brows, cheeks, ears, lips) with carved eye
  sockets; the bottom row is the open neck boundary;
* a mouth slit: one row segment in front is duplicated, so the jaw joint opens the lips;
* two closed eyeball spheres sit in the sockets;
* identity modes are smooth radial-basis displacement fields (orthonormalised, decaying
  variance, mostly mirror-symmetric); expression modes are local bumps on the face;
  eyeballs follow identity rigidly and ignore expression.

Everything is deterministic from the seed.
"""
from __future__ import annotations

import pickle
import sys
import types
from contextlib import contextmanager
from pathlib import Path

import numpy as np

from .headmodel import FLAME_JOINT_NAMES, HeadModel, LandmarkEmbedding

N_LAT, N_LON = 56, 84  # skin grid: rows from the crown to the neck cut, columns around
EYE_LAT, EYE_LON = 12, 20  # eyeball sphere rings and segments
EYE_RADIUS = 0.0125
N_SHAPE, N_EXPR = 300, 100

# Landmark anchors of the neutral face (front view, metres); left/right are the subject's.
EYE_Y, EYE_X, EYE_Z = 0.032, 0.032, 0.062
MOUTH_Y = -0.052
NOSE_TIP = (0.0, -0.005)


def _smin(a: np.ndarray, b: np.ndarray, k: float) -> np.ndarray:
    """Polynomial smooth minimum (smooth union of two distance fields)."""
    h = np.clip(0.5 + 0.5 * (b - a) / k, 0.0, 1.0)
    return b + (a - b) * h - k * h * (1.0 - h)


def _smax(a: np.ndarray, b: np.ndarray, k: float) -> np.ndarray:
    return -_smin(-a, -b, k)


def _ellipsoid(p: np.ndarray, centre, radii) -> np.ndarray:
    """Approximate signed distance to an ellipsoid (exact on the axes, good enough to march)."""
    q = (p - np.asarray(centre)) / np.asarray(radii)
    k = np.linalg.norm(q, axis=-1)
    return (k - 1.0) * np.min(radii)


def head_sdf(p: np.ndarray) -> np.ndarray:
    """Signed distance-like field of the neutral head (negative inside)."""
    d = _ellipsoid(p, (0.0, 0.035, -0.012), (0.076, 0.098, 0.096))  # cranium
    d = _smin(d, _ellipsoid(p, (0.0, -0.005, 0.018), (0.068, 0.075, 0.066)), 0.02)  # mid face
    d = _smin(d, _ellipsoid(p, (0.0, -0.052, 0.02), (0.054, 0.05, 0.06)), 0.02)  # jaw
    d = _smin(d, _ellipsoid(p, (0.0, -0.088, 0.045), (0.022, 0.018, 0.024)), 0.012)  # chin
    d = _smin(d, _ellipsoid(p, (0.0, -0.14, -0.025), (0.052, 0.12, 0.056)), 0.03)  # neck
    d = _smin(d, _ellipsoid(p, (0.0, 0.004, 0.083), (0.011, 0.03, 0.017)), 0.01)  # nose bridge
    d = _smin(d, _ellipsoid(p, (0.0, -0.014, 0.092), (0.015, 0.012, 0.014)), 0.008)  # nose tip
    for s in (-1.0, 1.0):
        d = _smin(d, _ellipsoid(p, (s * 0.012, -0.021, 0.084), (0.01, 0.007, 0.009)), 0.006)  # nostrils
        d = _smin(d, _ellipsoid(p, (s * 0.03, 0.05, 0.069), (0.026, 0.007, 0.011)), 0.014)  # brow
        d = _smin(d, _ellipsoid(p, (s * 0.047, -0.005, 0.058), (0.02, 0.018, 0.018)), 0.015)  # cheekbone
        d = _smin(d, _ellipsoid(p, (s * 0.079, 0.012, -0.012), (0.01, 0.03, 0.019)), 0.008)  # ear
    d = _smin(d, _ellipsoid(p, (0.0, MOUTH_Y + 0.006, 0.079), (0.025, 0.007, 0.01)), 0.008)  # upper lip
    d = _smin(d, _ellipsoid(p, (0.0, MOUTH_Y - 0.007, 0.077), (0.023, 0.008, 0.01)), 0.008)  # lower lip
    for s in (-1.0, 1.0):  # eye sockets, carved so the eyeballs show
        d = _smax(d, -_ellipsoid(p, (s * EYE_X, EYE_Y, EYE_Z + 0.012), (0.017, 0.011, 0.012)), 0.006)
    return d


CENTRE = np.array([0.0, 0.005, 0.0])


def _march(directions: np.ndarray, r_max: float = 0.32, steps: int = 40) -> np.ndarray:
    """Distance from CENTRE to the outermost zero crossing of head_sdf along each direction."""
    n = directions.shape[0]
    # Walk inward from outside to the first inside sample, then bisect.
    radii = np.linspace(r_max, 0.0, 160)
    inside = np.zeros(n, dtype=int)
    found = np.zeros(n, dtype=bool)
    for i, r in enumerate(radii):
        d = head_sdf(CENTRE + r * directions)
        hit = (d < 0) & ~found
        inside[hit] = i
        found |= hit
        if found.all():
            break
    lo = radii[inside]  # inside
    hi = radii[np.maximum(inside - 1, 0)]  # outside
    for _ in range(steps):
        mid = 0.5 * (lo + hi)
        d = head_sdf(CENTRE + mid[:, None] * directions)
        lo = np.where(d < 0, mid, lo)
        hi = np.where(d < 0, hi, mid)
    return 0.5 * (lo + hi)


def _direction(theta: np.ndarray, phi: np.ndarray) -> np.ndarray:
    """Unit direction for polar angle theta from +y and longitude phi (0 = +z face, + toward +x)."""
    s = np.sin(theta)
    return np.stack([s * np.sin(phi), np.cos(theta), s * np.cos(phi)], axis=-1)


def _row_angles() -> np.ndarray:
    """Polar angles of the skin rows: even in arc length, about twice as dense across the face."""
    dense = np.linspace(0.04, np.pi - 0.31, 600)
    pts = np.concatenate([CENTRE + _march(_direction(dense, np.full_like(dense, a)))[:, None]
                          * _direction(dense, np.full_like(dense, a)) for a in (0.0, np.pi / 2, np.pi)], axis=0)
    pts = pts.reshape(3, -1, 3)
    seg = np.linalg.norm(np.diff(pts, axis=1), axis=-1).mean(axis=0)
    front_y = 0.5 * (pts[0, 1:, 1] + pts[0, :-1, 1])
    seg = seg * np.where((front_y > -0.1) & (front_y < 0.075), 2.0, 1.0)
    arc = np.concatenate([[0.0], np.cumsum(seg)])
    targets = np.linspace(arc[0], arc[-1], N_LAT)
    return np.interp(targets, arc, dense)


def _eyeball(centre: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """A closed lat-long sphere with its poles on the gaze axis (+z); faces point outward."""
    theta = np.arange(1, EYE_LAT + 1) * np.pi / (EYE_LAT + 1)
    phi = np.arange(EYE_LON) * 2 * np.pi / EYE_LON
    t, p = np.meshgrid(theta, phi, indexing="ij")
    ring = np.stack([np.sin(t) * np.cos(p), np.sin(t) * np.sin(p), np.cos(t)], axis=-1).reshape(-1, 3)
    verts = np.concatenate([[[0, 0, 1.0]], ring, [[0, 0, -1.0]]]) * EYE_RADIUS + centre
    last = 1 + EYE_LAT * EYE_LON
    idx = lambda i, j: 1 + i * EYE_LON + (j % EYE_LON)  # noqa: E731
    faces = []
    for j in range(EYE_LON):
        faces.append([0, idx(0, j), idx(0, j + 1)])
        faces.append([last, idx(EYE_LAT - 1, j + 1), idx(EYE_LAT - 1, j)])
        for i in range(EYE_LAT - 1):
            faces.append([idx(i, j), idx(i + 1, j), idx(i + 1, j + 1)])
            faces.append([idx(i, j), idx(i + 1, j + 1), idx(i, j + 1)])
    faces = np.asarray(faces, dtype=np.int64)
    # orient outward: flip if the signed volume is negative
    a, b, c = (verts[faces[:, k]] - centre for k in range(3))
    if np.einsum("ij,ij->i", a, np.cross(b, c)).sum() < 0:
        faces = faces[:, ::-1]
    return verts, faces


def _eyeball_uv(offset_v: float) -> np.ndarray:
    theta = np.arange(1, EYE_LAT + 1) / (EYE_LAT + 1)
    phi = np.arange(EYE_LON) / EYE_LON
    t, p = np.meshgrid(theta, phi, indexing="ij")
    # a disc chart: the gaze pole in the middle, rings outward
    r = 0.105 * t
    u = 0.875 + r * np.cos(2 * np.pi * p)
    v = offset_v + r * np.sin(2 * np.pi * p)
    ring = np.stack([u, v], axis=-1).reshape(-1, 2)
    return np.concatenate([[[0.875, offset_v]], ring, [[0.985, offset_v]]])


class _Skin:
    """The skin grid and its bookkeeping."""

    def __init__(self) -> None:
        self.theta = _row_angles()
        # mirror-symmetric columns, about 1.8x denser on the face than at the back of the head
        s = -1.0 + 2.0 * (np.arange(N_LON) + 0.5) / N_LON
        self.phi = np.pi * (0.55 * s + 0.45 * s**3)
        t, p = np.meshgrid(self.theta[1:], self.phi, indexing="ij")
        dirs = _direction(t, p).reshape(-1, 3)
        grid = CENTRE + _march(dirs)[:, None] * dirs
        top = CENTRE + _march(_direction(np.array([0.0]), np.array([0.0])))[:, None] * np.array([[0, 1.0, 0]])
        self.verts = np.concatenate([top, grid])
        self.rows = N_LAT - 1

    def vid(self, i: int, j: int) -> int:
        """Vertex id of row i (0-based below the crown) and column j."""
        return 1 + i * N_LON + (j % N_LON)


def _mouth_slit(skin: _Skin) -> tuple[int, list[int]]:
    """The grid row of the lip line and the columns the slit spans (open ends excluded)."""
    front = [skin.vid(i, N_LON // 2) for i in range(skin.rows)]
    row = int(np.argmin(np.abs(skin.verts[front, 1] - MOUTH_Y)))
    cols = [j for j in range(N_LON) if abs(skin.phi[j]) < 0.30]
    return row, cols[1:-1]


def _build_geometry():
    skin = _Skin()
    verts = [skin.verts]
    uvs = []
    faces, faces_uv = [], []
    # skin uv: longitude to u in [0.0075, 0.7425] with a seam at the back, rows to v
    u_of = lambda j: 0.0075 + 0.735 * j / N_LON  # noqa: E731
    v_of = lambda i: 0.9925 - 0.985 * (i + 1) / N_LAT  # noqa: E731
    uv_grid = np.array([[u_of(j), v_of(i)] for i in range(skin.rows) for j in range(N_LON + 1)])
    uv_top = np.array([[0.375, 0.9925]])
    uv_id = lambda i, j: 1 + i * (N_LON + 1) + j  # noqa: E731  (j may be N_LON: the seam copy)
    uvs.extend([uv_top, uv_grid])
    mouth_row, slit_cols = _mouth_slit(skin)
    n_skin = skin.verts.shape[0]
    # duplicate the slit vertices for the lower lip
    dup = {j: n_skin + k for k, j in enumerate(slit_cols)}
    verts.append(skin.verts[[skin.vid(mouth_row, j) for j in slit_cols]])
    n_uv_skin = 1 + skin.rows * (N_LON + 1)
    dup_uv = {j: n_uv_skin + k for k, j in enumerate(slit_cols)}
    half_row = 0.985 / N_LAT * 0.5
    uvs.append(np.array([[u_of(j), v_of(mouth_row) - half_row] for j in slit_cols]))
    for j in range(N_LON):  # crown fan
        faces.append([0, skin.vid(0, j + 1), skin.vid(0, j)])
        faces_uv.append([0, uv_id(0, j + 1), uv_id(0, j)])
    for i in range(skin.rows - 1):
        for j in range(N_LON):
            a, b = skin.vid(i, j), skin.vid(i, j + 1)
            c, d = skin.vid(i + 1, j), skin.vid(i + 1, j + 1)
            ta, tb, tc, td = uv_id(i, j), uv_id(i, j + 1), uv_id(i + 1, j), uv_id(i + 1, j + 1)
            if i == mouth_row:  # faces below the lip line take the lower-lip copies
                if j in dup:
                    a, ta = dup[j], dup_uv[j]
                if (j + 1) % N_LON in dup:
                    b, tb = dup[(j + 1) % N_LON], dup_uv[(j + 1) % N_LON]
            faces.append([a, c, d])
            faces.append([a, d, b])
            faces_uv.append([ta, tc, td])
            faces_uv.append([ta, td, tb])
    n_head = n_skin + len(slit_cols)
    # eyeballs, pushed forward so their fronts show through the sockets
    eye_centres = np.array([[EYE_X, EYE_Y, EYE_Z - 0.001], [-EYE_X, EYE_Y, EYE_Z - 0.001]])
    eye_ids = []
    n_uv = sum(len(u) for u in uvs)
    for k, centre in enumerate(eye_centres):
        ev, ef = _eyeball(centre)
        base = sum(len(v) for v in verts)
        verts.append(ev)
        eye_ids.append(np.arange(base, base + len(ev)))
        faces.extend((ef + base).tolist())
        uvs.append(_eyeball_uv(0.25 if k == 0 else 0.75))
        faces_uv.extend((ef + n_uv).tolist())
        n_uv += len(ev)
    geo = dict(
        verts=np.concatenate(verts), faces=np.asarray(faces, dtype=np.int64),
        uv=np.concatenate(uvs), faces_uv=np.asarray(faces_uv, dtype=np.int64),
        n_skin=n_skin, n_head=n_head, eye_ids=eye_ids, eye_centres=eye_centres,
        mouth_row=mouth_row, slit_cols=slit_cols, dup=dup, skin=skin)
    return geo


def _smoothstep(e0: float, e1: float, x: np.ndarray) -> np.ndarray:
    t = np.clip((x - e0) / (e1 - e0), 0.0, 1.0)
    return t * t * (3 - 2 * t)


def _skinning(geo) -> tuple[np.ndarray, np.ndarray]:
    """Skinning weights (V, 5) and a per-vertex lower-jaw indicator."""
    v = geo["verts"]
    n_v = v.shape[0]
    skin = geo["skin"]
    w = np.zeros((n_v, 5))
    head = np.arange(geo["n_head"])
    y, z = v[head, 1], v[head, 2]
    root = _smoothstep(-0.115, -0.16, y)  # lower neck follows the global joint
    jaw = _smoothstep(MOUTH_Y + 0.004, MOUTH_Y - 0.012, y) * _smoothstep(-0.01, 0.03, z)
    # the jaw also carries the soft tissue under the chin, fading into the neck
    jaw *= 1.0 - _smoothstep(-0.085, -0.11, y) * (1 - _smoothstep(0.0, 0.04, z))
    # the upper side of the slit stays with the head, the duplicated lower side with the jaw
    mouth_row = geo["mouth_row"]
    upper = [skin.vid(mouth_row, j) for j in geo["slit_cols"]]
    lower = list(geo["dup"].values())
    jaw[upper] = 0.0
    jaw[lower] = 1.0
    jaw *= 1.0 - root
    w[head, 0] = root
    w[head, 2] = jaw
    w[head, 1] = 1.0 - root - jaw
    w[geo["eye_ids"][0], 3] = 1.0  # left eye (+x)
    w[geo["eye_ids"][1], 4] = 1.0
    lower_jaw = np.zeros(n_v, dtype=bool)
    lower_jaw[head] = jaw > 0.5
    return w, lower_jaw


def _regressor_row(verts: np.ndarray, candidates: np.ndarray, target: np.ndarray) -> np.ndarray:
    """Minimum-norm weights around uniform with sum 1 whose weighted mean is ``target``."""
    pts = verts[candidates]
    k = len(candidates)
    w0 = np.full(k, 1.0 / k)
    a = np.vstack([pts.T, np.ones(k)])
    b = np.concatenate([target, [1.0]])
    w = w0 + a.T @ np.linalg.solve(a @ a.T, b - a @ w0)
    row = np.zeros(verts.shape[0])
    row[candidates] = w
    return row


def _joint_regressor(geo) -> np.ndarray:
    v = geo["verts"]
    head = np.arange(geo["n_skin"])
    targets = {0: np.array([0.0, -0.15, -0.025]), 1: np.array([0.0, -0.075, -0.022]), 2: np.array([0.0, -0.025, 0.0])}
    reg = np.zeros((5, v.shape[0]))
    for j, target in targets.items():
        band = head[np.abs(v[head, 1] - target[1]) < 0.012]
        reg[j] = _regressor_row(v, band, target)
    for j, ids in ((3, geo["eye_ids"][0]), (4, geo["eye_ids"][1])):
        reg[j, ids] = 1.0 / len(ids)
    return reg


def _farthest_points(points: np.ndarray, k: int, rng: np.random.Generator) -> np.ndarray:
    chosen = [int(rng.integers(len(points)))]
    dist = np.linalg.norm(points - points[chosen[0]], axis=1)
    for _ in range(k - 1):
        nxt = int(np.argmax(dist))
        chosen.append(nxt)
        dist = np.minimum(dist, np.linalg.norm(points - points[nxt], axis=1))
    return points[chosen]


def _rbf_fields(points: np.ndarray, centres: np.ndarray, sigma: float, coeffs: np.ndarray) -> np.ndarray:
    """Smooth vector fields: ``coeffs [K, M, 3]`` on Gaussian bumps -> ``[N, 3, K]``."""
    d2 = ((points[:, None] - centres[None]) ** 2).sum(-1)
    phi = np.exp(-d2 / (2 * sigma**2))  # (N, M)
    k, m, _ = coeffs.shape
    return (phi @ coeffs.transpose(1, 2, 0).reshape(m, 3 * k)).reshape(-1, 3, k)


def _mirror(points: np.ndarray) -> np.ndarray:
    return points * np.array([-1.0, 1.0, 1.0])


def _identity_basis(geo, rng: np.random.Generator) -> np.ndarray:
    """300 smooth, orthonormalised, mostly symmetric identity modes with decaying std (metres)."""
    v = geo["verts"]
    n_v = v.shape[0]
    head = np.arange(geo["n_head"])
    sample_pts = np.concatenate([v[head], geo["eye_centres"]])
    centres = _farthest_points(v[: geo["n_skin"]], 140, rng)
    fields = []
    for sigma, count in ((0.06, 100), (0.035, 200)):
        coeffs = rng.normal(size=(count, len(centres), 3))
        f = _rbf_fields(sample_pts, centres, sigma, coeffs)
        fm = _rbf_fields(_mirror(sample_pts), centres, sigma, coeffs) * np.array([-1.0, 1.0, 1.0])[None, :, None]
        sym, anti = 0.5 * (f + fm), 0.5 * (f - fm)
        fields.append(sym + 0.25 * anti)
    f = np.concatenate(fields, axis=2)  # (Nh+2, 3, 300)
    # global scale modes first: they dominate real head variation
    p = sample_pts - sample_pts.mean(0)
    scale = np.stack([p * np.array(a) for a in ([1, 0, 0], [0, 1, 0], [0, 0, 1])], axis=-1)
    f = np.concatenate([scale, f[..., : N_SHAPE - 3]], axis=2)
    n_head = len(head)
    q, _ = np.linalg.qr(f[:n_head].reshape(n_head * 3, -1))
    # express the orthonormal modes on the eye centres too, through the same linear map
    coef = np.linalg.lstsq(f[:n_head].reshape(n_head * 3, -1), q, rcond=None)[0]
    basis_eye = f[n_head:].reshape(2 * 3, -1) @ coef
    rms = np.sqrt(3.0 / (n_head * 3))  # unit-norm mode -> per-coordinate rms
    std = 0.004 / (1.0 + np.arange(N_SHAPE) / 3.0) ** 1.2
    modes = np.zeros((n_v, 3, N_SHAPE))
    modes[head] = q.reshape(n_head, 3, -1) / rms * std
    eye = basis_eye.reshape(2, 3, -1) / rms * std
    for k, ids in enumerate(geo["eye_ids"]):
        modes[ids] = eye[k][None]  # eyeballs move rigidly with the head shape
    return modes


def _local_window(points: np.ndarray, centre: np.ndarray, sigma: float) -> np.ndarray:
    return np.exp(-((points - centre) ** 2).sum(-1) / (2 * sigma**2))


def _expression_basis(geo, lower_jaw: np.ndarray, normals: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """100 local expression modes on the face (eyeballs untouched)."""
    v = geo["verts"]
    n_v = v.shape[0]
    head = np.arange(geo["n_head"])
    anchors = [np.array(a) for a in (
        (0.0, MOUTH_Y, 0.08), (0.024, MOUTH_Y, 0.07), (-0.024, MOUTH_Y, 0.07), (0.0, MOUTH_Y + 0.01, 0.08),
        (0.0, MOUTH_Y - 0.012, 0.078), (0.03, 0.055, 0.075), (-0.03, 0.055, 0.075), (0.012, 0.052, 0.08),
        (-0.012, 0.052, 0.08), (0.045, -0.01, 0.06), (-0.045, -0.01, 0.06), (0.0, -0.085, 0.055),
        (0.032, 0.042, 0.07), (-0.032, 0.042, 0.07), (0.0, 0.0, 0.09), (0.0, 0.075, 0.07))]
    modes = np.zeros((n_v, 3, N_EXPR))
    pts = v[head]
    nrm = normals[head]
    for k in range(N_EXPR):
        centre = anchors[k % len(anchors)] + rng.normal(scale=0.006, size=3) * (k >= len(anchors))
        sigma = rng.uniform(0.01, 0.022)
        window = _local_window(pts, centre, sigma)
        near_mouth = abs(centre[1] - MOUTH_Y) < 0.02 and centre[2] > 0.05
        if near_mouth:  # lip modes act on the upper lip, the lower lip or both
            side = k % 3
            if side == 1:
                window = window * ~lower_jaw[head]
            elif side == 2:
                window = window * lower_jaw[head]
        tangent = rng.normal(size=3)
        direction = 0.6 * nrm * rng.choice([-1.0, 1.0]) + 0.4 * tangent / np.linalg.norm(tangent)
        amp = 0.005 / (1.0 + k / 20.0)
        modes[head, :, k] = window[:, None] * direction * amp
    return modes


def _eyelid_basis(geo, normals: np.ndarray) -> np.ndarray:
    """Left and right eyelid closure: the upper lid skin slides down over the eyeball."""
    v = geo["verts"]
    out = np.zeros((v.shape[0], 3, 2))
    head = np.arange(geo["n_head"])
    for k, centre in enumerate(geo["eye_centres"]):
        above = v[head, 1] - centre[1]
        lid = centre + np.array([0.0, 0.009, 0.009])
        window = _local_window(v[head] * np.array([0.7, 1.0, 1.0]), lid * np.array([0.7, 1.0, 1.0]), 0.009)
        window *= _smoothstep(-0.003, 0.004, above) * (v[head, 2] > centre[2] - 0.005)
        out[head, :, k] = window[:, None] * np.array([0.0, -0.017, 0.005])
    return out


def _pose_correctives(geo, weights: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """36 smooth correctives: neck columns act where the neck bends, jaw columns on the jaw."""
    v = geo["verts"]
    n_v = v.shape[0]
    head = np.arange(geo["n_head"])
    centres = _farthest_points(v[: geo["n_skin"]], 40, rng)
    out = np.zeros((n_v, 3, 36))
    neck_region = weights[head, 0] * (1 - weights[head, 0]) * 4 + 0.3 * weights[head, 2]
    jaw_region = np.clip(weights[head, 2] * 1.2, 0, 1) * (1 - weights[head, 2]) * 4 + 0.2 * weights[head, 2]
    for col in range(18):  # columns 0..8 neck, 9..17 jaw; the eyes get none, as in FLAME
        region = neck_region if col < 9 else jaw_region
        field = _rbf_fields(v[head], centres, 0.04, rng.normal(size=(1, len(centres), 3)))[..., 0]
        field /= np.abs(field).max() + 1e-12
        out[head, :, col] = field * region[:, None] * 0.004
    return out


def _vertex_normals_np(verts: np.ndarray, faces: np.ndarray) -> np.ndarray:
    fn = np.cross(verts[faces[:, 1]] - verts[faces[:, 0]], verts[faces[:, 2]] - verts[faces[:, 0]])
    vn = np.zeros_like(verts)
    for k in range(3):
        np.add.at(vn, faces[:, k], fn)
    return vn / np.maximum(np.linalg.norm(vn, axis=1, keepdims=True), 1e-12)


def _masks(geo, weights: np.ndarray) -> dict[str, np.ndarray]:
    v = geo["verts"]
    head = np.arange(geo["n_head"])
    x, y, z = v[head].T
    phi = np.arctan2(x, z)
    dist = lambda c: np.linalg.norm(v[head] - np.asarray(c), axis=1)  # noqa: E731
    left_eye_region = head[dist(geo["eye_centres"][0]) < 0.026]
    right_eye_region = head[dist(geo["eye_centres"][1]) < 0.026]
    face = head[(np.abs(phi) < 1.05) & (y < 0.075) & (y > -0.1) & (z > 0.0)]
    masks = {
        "face": face,
        "left_eyeball": geo["eye_ids"][0], "right_eyeball": geo["eye_ids"][1],
        "left_eye_region": left_eye_region, "right_eye_region": right_eye_region,
        "eye_region": np.union1d(left_eye_region, right_eye_region),
        "nose": head[(dist((0.0, -0.002, 0.085)) < 0.03) & (np.abs(x) < 0.022) & (z > 0.06)],
        "lips": head[(np.abs(y - MOUTH_Y) < 0.014) & (np.abs(x) < 0.03) & (z > 0.06)],
        "left_ear": head[dist((0.079, 0.012, -0.012)) < 0.03],
        "right_ear": head[dist((-0.079, 0.012, -0.012)) < 0.03],
        "neck": head[(y < -0.09) & ~((z > 0.02) & (y > -0.11))],
        "scalp": head[(y > 0.075) | ((np.abs(phi) > 1.9) & (y > -0.03))],
        "forehead": head[(y > 0.06) & (y < 0.1) & (np.abs(phi) < 0.9) & (z > 0.0)],
        "boundary": np.array([geo["skin"].vid(geo["skin"].rows - 1, j) for j in range(N_LON)]),
    }
    return {k: np.asarray(np.sort(m), dtype=np.int64) for k, m in masks.items()}


def _face_at_vertex(faces: np.ndarray, vertex: int) -> tuple[int, np.ndarray]:
    """A triangle containing ``vertex`` and the barycentric coordinates that pick it."""
    f = int(np.nonzero((faces == vertex).any(axis=1))[0][0])
    bary = (faces[f] == vertex).astype(np.float64)
    return f, bary


def _project_front(verts: np.ndarray, faces: np.ndarray, face_ids: np.ndarray, xy: np.ndarray) -> tuple[int, np.ndarray]:
    """The front-most triangle under a point seen along -z, with its barycentric coordinates."""
    tri = verts[faces[face_ids]]  # (K, 3, 3)
    a, b, c = tri[:, 0, :2], tri[:, 1, :2], tri[:, 2, :2]
    v0, v1, v2 = b - a, c - a, xy[None] - a
    den = v0[:, 0] * v1[:, 1] - v1[:, 0] * v0[:, 1]
    ok_den = np.abs(den) > 1e-14
    den = np.where(ok_den, den, 1.0)
    l1 = (v2[:, 0] * v1[:, 1] - v1[:, 0] * v2[:, 1]) / den
    l2 = (v0[:, 0] * v2[:, 1] - v2[:, 0] * v0[:, 1]) / den
    l0 = 1 - l1 - l2
    inside = ok_den & (l0 >= -1e-9) & (l1 >= -1e-9) & (l2 >= -1e-9)
    if not inside.any():
        raise RuntimeError(f"no triangle under landmark anchor {xy}")
    depth = l0 * tri[:, 0, 2] + l1 * tri[:, 1, 2] + l2 * tri[:, 2, 2]
    best = np.argmax(np.where(inside, depth, -np.inf))
    return int(face_ids[best]), np.array([l0[best], l1[best], l2[best]])


def ibug_anchors(mouth_y: float = MOUTH_Y) -> np.ndarray:
    """Front-view (x, y) of the 51 static iBUG-68 points 17..67 on the neutral synthetic face."""
    pts = []
    for side in (-1, 1):  # brows 17-21 (subject's right, outer->inner), 22-26 (left, inner->outer)
        xs = np.linspace(0.05, 0.012, 5) if side == -1 else np.linspace(0.012, 0.05, 5)
        for xv in xs:
            pts.append((side * xv, 0.05 + 0.008 * np.sin(np.pi * (xv - 0.012) / 0.038)))
    pts += [(0.0, 0.032), (0.0, 0.018), (0.0, 0.004), (0.0, -0.01)]  # nose bridge 27-30
    pts += [(x, -0.02 if abs(x) > 0.005 else -0.022) for x in (-0.014, -0.007, 0.0, 0.007, 0.014)]  # 31-35
    # eyes 36-41 (right) and 42-47 (left): both run corner, upper lid, corner, lower lid from
    # image left to image right, on the lid margins where skin meets the eyeball
    ring = [(-0.0165, 0.0), (-0.006, 0.0085), (0.006, 0.0085), (0.0165, 0.0), (0.006, -0.0075), (-0.006, -0.0075)]
    for side in (-1, 1):
        pts += [(side * EYE_X + dx, EYE_Y + dy) for dx, dy in ring]
    outer = [(-0.025, 0.0), (-0.016, 0.007), (-0.007, 0.01), (0.0, 0.009), (0.007, 0.01), (0.016, 0.007),
             (0.025, 0.0), (0.016, -0.009), (0.007, -0.013), (0.0, -0.014), (-0.007, -0.013), (-0.016, -0.009)]
    pts += [(x, mouth_y + y) for x, y in outer]  # 48-59
    inner = [(-0.02, 0.0), (-0.008, 0.0015), (0.0, 0.0015), (0.008, 0.0015),
             (0.02, 0.0), (0.008, -0.0015), (0.0, -0.0015), (-0.008, -0.0015)]
    pts += [(x, mouth_y + y) for x, y in inner]  # 60-67
    return np.asarray(pts)


def _landmarks(geo, lower_jaw: np.ndarray) -> LandmarkEmbedding:
    v, f = geo["verts"], geo["faces"]
    n_head = geo["n_head"]
    head_faces = np.nonzero((f < n_head).all(axis=1))[0]
    front = head_faces[v[f[head_faces]][:, :, 2].mean(axis=1) > 0.0]
    upper_faces = front[~lower_jaw[f[front]].any(axis=1)]
    lower_faces = front[lower_jaw[f[front]].all(axis=1)]
    slit = [geo['skin'].vid(geo['mouth_row'], j) for j in geo['slit_cols']]
    anchors = ibug_anchors(float(v[slit, 1].mean()))
    static_faces, static_bary = [], []
    for k, xy in enumerate(anchors):
        ibug = 17 + k
        pool = front
        if 36 <= ibug <= 47:
            pool = front  # skin only: lid points belong to the lids, not the eyeballs
        elif ibug in (61, 62, 63):
            pool = upper_faces
        elif ibug in (65, 66, 67):
            pool = lower_faces
        fid, bary = _project_front(v, f, pool, xy)
        static_faces.append(fid)
        static_bary.append(bary)
    # dynamic contour: for each yaw bin, the outermost jaw-line point in 17 directions
    contour_pool = np.nonzero((np.arange(v.shape[0]) < n_head) & (v[:, 2] > -0.005) & (v[:, 1] < 0.02)
                              & (v[:, 1] > -0.1) & (np.abs(v[:, 0]) < 0.072))[0]
    centre = np.array([0.0, -0.005])
    angles = np.linspace(-np.pi / 2 - 0.25, np.pi / 2 + 0.25, 17)  # from the subject's right, under the chin
    dyn_faces = np.zeros((79, 17), dtype=np.int64)
    dyn_bary = np.zeros((79, 17, 3))
    for row in range(79):
        yaw_deg = -row if row <= 39 else row - 39
        c, s = np.cos(np.radians(yaw_deg)), np.sin(np.radians(yaw_deg))
        p = v[contour_pool]
        xr = c * p[:, 0] + s * p[:, 2]
        rel = np.stack([xr, p[:, 1]], axis=1) - centre
        ang = np.arctan2(rel[:, 0], -rel[:, 1])
        for k, a in enumerate(angles):
            near = np.abs(((ang - a) + np.pi) % (2 * np.pi) - np.pi) < 0.06
            if not near.any():
                near = np.abs(ang - a) <= np.abs(ang - a).min() + 1e-9
            reach = rel[:, 0] * np.sin(a) - rel[:, 1] * np.cos(a)
            best = contour_pool[np.nonzero(near)[0][np.argmax(reach[near])]]
            dyn_faces[row, k], dyn_bary[row, k] = _face_at_vertex(f, int(best))
    return LandmarkEmbedding(static_faces=np.asarray(static_faces, dtype=np.int64),
                             static_bary=np.asarray(static_bary), dynamic_faces=dyn_faces, dynamic_bary=dyn_bary)


def build_synthetic_model(seed: int = 0) -> HeadModel:
    """The synthetic FLAME-format head as a :class:`HeadModel` (deterministic from ``seed``)."""
    rng = np.random.default_rng(seed)
    geo = _build_geometry()
    weights, lower_jaw = _skinning(geo)
    normals = _vertex_normals_np(geo["verts"], geo["faces"])
    model = HeadModel(
        name="headcast-synthetic",
        v_template=geo["verts"], faces=geo["faces"],
        shapedirs=_identity_basis(geo, rng), exprdirs=_expression_basis(geo, lower_jaw, normals, rng),
        posedirs=_pose_correctives(geo, weights, rng), j_regressor=_joint_regressor(geo),
        weights=weights, parents=np.array([-1, 0, 1, 1, 1], dtype=np.int64), joint_names=FLAME_JOINT_NAMES,
        eyelids=_eyelid_basis(geo, normals), uv=geo["uv"], faces_uv=geo["faces_uv"],
        masks=_masks(geo, weights), licence="Headcast synthetic model (CC0)", source=f"synthetic seed {seed}")
    model.landmarks = _landmarks(geo, lower_jaw)
    return model.validate("<synthetic>")


# --- writing the files in FLAME's own layouts ----------------------------------------------------

@contextmanager
def _foreign_classes():
    """Temporarily provide ``chumpy.ch.Ch`` and ``scipy.sparse.csc.csc_matrix`` for pickling.

    Real FLAME pickles reference these classes; the stand-ins reproduce the exact state a
    chumpy array (``{'x': array}``) and an old scipy csc matrix (``data/indices/indptr/_shape``)
    pickle to, so the files exercise the same loading path as the real ones.
    """
    ch_mod = types.ModuleType("chumpy.ch")
    top = types.ModuleType("chumpy")

    class Ch:
        def __init__(self, x):
            self.x = np.asarray(x)

        def __getstate__(self):
            return {"x": self.x}

    Ch.__module__, Ch.__qualname__ = "chumpy.ch", "Ch"
    ch_mod.Ch = Ch
    top.ch = ch_mod

    csc_mod = types.ModuleType("scipy.sparse.csc")

    class csc_matrix:  # noqa: N801 (the name pickles must carry)
        def __init__(self, dense):
            dense = np.asarray(dense)
            data, indices, indptr = [], [], [0]
            for col in range(dense.shape[1]):
                rows = np.nonzero(dense[:, col])[0]
                data.extend(dense[rows, col])
                indices.extend(rows)
                indptr.append(len(data))
            self._shape = dense.shape
            self.data = np.asarray(data, dtype=np.float64)
            self.indices = np.asarray(indices, dtype=np.int32)
            self.indptr = np.asarray(indptr, dtype=np.int32)
            self.maxprint = 50
            self.format = "csc"

    csc_matrix.__module__, csc_matrix.__qualname__ = "scipy.sparse.csc", "csc_matrix"
    csc_mod.csc_matrix = csc_matrix
    saved = {k: sys.modules.get(k) for k in ("chumpy", "chumpy.ch", "scipy.sparse.csc")}
    sys.modules.update({"chumpy": top, "chumpy.ch": ch_mod, "scipy.sparse.csc": csc_mod})
    try:
        yield Ch, csc_matrix
    finally:
        for k, mod in saved.items():
            if mod is None:
                sys.modules.pop(k, None)
            else:
                sys.modules[k] = mod


def flame_pickle_dict(model: HeadModel, Ch=None, csc=None) -> dict:
    """The dict FLAME's ``generic_model.pkl`` holds, built from ``model``."""
    shapedirs = np.concatenate([model.shapedirs, model.exprdirs], axis=2)
    kintree = np.stack([np.where(model.parents < 0, 2**32 - 1, model.parents), np.arange(model.n_joints)]).astype(np.uint32)
    return {
        "v_template": model.v_template,
        "f": model.faces.astype(np.uint32),
        "shapedirs": Ch(shapedirs) if Ch else shapedirs,
        "posedirs": model.posedirs,
        "J_regressor": csc(model.j_regressor) if csc else model.j_regressor,
        "J": model.j_regressor @ model.v_template,
        "weights": model.weights,
        "kintree_table": kintree,
        "bs_style": "lbs",
        "bs_type": "lrotmin",
    }


def write_obj(path: Path, verts: np.ndarray, faces: np.ndarray, uv: np.ndarray | None = None,
              faces_uv: np.ndarray | None = None, header: str = "") -> Path:
    lines = [f"# {line}" for line in header.splitlines()]
    lines += [f"v {x:.8f} {y:.8f} {z:.8f}" for x, y, z in verts]
    if uv is not None:
        lines += [f"vt {u:.8f} {v:.8f}" for u, v in uv]
        lines += [f"f {a + 1}/{ta + 1} {b + 1}/{tb + 1} {c + 1}/{tc + 1}"
                  for (a, b, c), (ta, tb, tc) in zip(faces, faces_uv)]
    else:
        lines += [f"f {a + 1} {b + 1} {c + 1}" for a, b, c in faces]
    path.write_text("\n".join(lines) + "\n")
    return path


def write_synthetic_model(outdir: str | Path, seed: int = 0, model: HeadModel | None = None) -> dict[str, Path]:
    """Write the synthetic model and its assets under FLAME's usual file names.

    ``generic_model.pkl`` (chumpy-style shapedirs, sparse J_regressor, uint32 kintree root),
    ``FLAME_masks.pkl``, ``landmark_embedding.npy`` (DECA layout, dynamic entries as pickled
    torch tensors when torch is available), RingNet's ``flame_static_embedding.pkl`` and
    ``flame_dynamic_embedding.npy``, ``head_template.obj`` with uvs, and the eyelid
    blendshapes ``l_eyelid.npy`` / ``r_eyelid.npy``. ``model`` skips rebuilding an already
    built synthetic model of the same seed.
    """
    outdir = Path(outdir)
    outdir.mkdir(parents=True, exist_ok=True)
    model = model or build_synthetic_model(seed)
    files = {}
    with _foreign_classes() as (Ch, csc):
        files["model"] = outdir / "generic_model.pkl"
        files["model"].write_bytes(pickle.dumps(flame_pickle_dict(model, Ch, csc), protocol=2))
    files["masks"] = outdir / "FLAME_masks.pkl"
    files["masks"].write_bytes(pickle.dumps(model.masks, protocol=2))
    lm = model.landmarks
    dyn_faces, dyn_bary = lm.dynamic_faces, lm.dynamic_bary.astype(np.float32)
    try:  # the DECA file stores these two as torch tensors; reproduce that when we can
        import torch
        dyn_faces, dyn_bary = torch.from_numpy(dyn_faces), torch.from_numpy(dyn_bary)
    except ImportError:  # pragma: no cover - the backend always has torch
        pass
    full_faces = np.concatenate([lm.dynamic_faces[0], lm.static_faces])[None]
    full_bary = np.concatenate([lm.dynamic_bary[0], lm.static_bary])[None].astype(np.float32)
    deca = {"static_lmk_faces_idx": lm.static_faces, "static_lmk_bary_coords": lm.static_bary,
            "dynamic_lmk_faces_idx": dyn_faces, "dynamic_lmk_bary_coords": dyn_bary,
            "full_lmk_faces_idx": full_faces, "full_lmk_bary_coords": full_bary}
    files["landmarks"] = outdir / "landmark_embedding.npy"
    np.save(files["landmarks"], np.array(deca, dtype=object), allow_pickle=True)
    files["static_embedding"] = outdir / "flame_static_embedding.pkl"
    files["static_embedding"].write_bytes(pickle.dumps(
        {"lmk_face_idx": lm.static_faces.astype(np.uint32), "lmk_b_coords": lm.static_bary}, protocol=2))
    files["dynamic_embedding"] = outdir / "flame_dynamic_embedding.npy"
    np.save(files["dynamic_embedding"], np.array(
        {"lmk_face_idx": lm.dynamic_faces.tolist(), "lmk_b_coords": lm.dynamic_bary}, dtype=object), allow_pickle=True)
    files["uv_template"] = write_obj(outdir / "head_template.obj", model.v_template, model.faces, model.uv,
                                     model.faces_uv, header="Headcast synthetic FLAME-format head (CC0), uv template")
    files["eyelid_left"] = outdir / "l_eyelid.npy"
    np.save(files["eyelid_left"], model.eyelids[..., 0])
    files["eyelid_right"] = outdir / "r_eyelid.npy"
    np.save(files["eyelid_right"], model.eyelids[..., 1])
    (outdir / "README.txt").write_text(
        "Synthetic FLAME-format head generated by Headcast (seed %d).\n"
        "Own geometry, no FLAME data; released under CC0. File names and layouts follow FLAME's.\n" % seed)
    return files
