# SPDX-License-Identifier: GPL-3.0-or-later
"""numba kernels for the per-pixel and per-face work of the CPU path (optional accelerator).

The torch implementations in :mod:`raster`, :mod:`interpolate`, :mod:`antialias` and
:mod:`shading` run a few dozen tensor operations per call; on CPU their cost is dominated by
memory traffic and dispatch, not arithmetic. These loops do the same maths in one pass:

* barycentrics of the covered pixels (forward) and their analytic backward to the screen
  vertices;
* attribute interpolation (forward) and its backward to attributes and barycentrics;
* the search for adjacent pixel pairs that straddle a silhouette edge (antialias);
* area-weighted vertex normals and their backward.

Arithmetic is done in float64 and stored in the caller's dtype. All loops are serial: each
takes well under a millisecond for a 512² image, results are deterministic, gradients
accumulate without atomics, and a second OpenMP pool (numba's) would compete with torch's
threads on small machines.
"""
from __future__ import annotations

import numpy as np

from .visibility_numba import AVAILABLE

if AVAILABLE:
    import numba

    @numba.njit(cache=True, nogil=True)
    def compact_pixels(face_id, zinv, depth, mask):
        """Covered pixels of a [B, H, W] face-id buffer, in raster order: flat index, face,
        and (x, y, batch) so that later kernels need no integer division. Also fills the
        depth buffer (1/zinv, 0 where empty: the same float32 division as the torch path)
        and the coverage mask."""
        n_batch, height, width = face_id.shape
        one = np.float32(1.0)
        count = 0
        for b in range(n_batch):
            for y in range(height):
                for x in range(width):
                    z = zinv[b, y, x]
                    depth[b, y, x] = one / z if z > 0 else np.float32(0.0)
                    if face_id[b, y, x] >= 0:
                        mask[b, y, x] = 1.0
                        count += 1
                    else:
                        mask[b, y, x] = 0.0
        pixel_index = np.empty(count, dtype=np.int64)
        pixel_face = np.empty(count, dtype=np.int64)
        pixel_xyb = np.empty((count, 3), dtype=np.int32)
        n = 0
        for b in range(n_batch):
            for y in range(height):
                for x in range(width):
                    f = face_id[b, y, x]
                    if f >= 0:
                        pixel_index[n] = (b * height + y) * width + x
                        pixel_face[n] = f
                        pixel_xyb[n, 0] = x
                        pixel_xyb[n, 1] = y
                        pixel_xyb[n, 2] = b
                        n += 1
        return pixel_index, pixel_face, pixel_xyb

    @numba.njit(cache=True, nogil=True, inline="always")
    def _pixel_corners(n, faces, pixel_face, pixel_xyb, n_verts):
        """Pixel centre and the three vertex rows of the face covering pixel n."""
        f = pixel_face[n]
        base = pixel_xyb[n, 2] * n_verts
        return (pixel_xyb[n, 0] + 0.5, pixel_xyb[n, 1] + 0.5, faces[f, 0] + base,
                faces[f, 1] + base, faces[f, 2] + base)

    @numba.njit(cache=True, nogil=True)
    def bary_forward(verts, faces, pixel_face, pixel_xyb, n_verts, bary):
        for n in range(pixel_face.shape[0]):
            px, py, i0, i1, i2 = _pixel_corners(n, faces, pixel_face, pixel_xyb, n_verts)
            dx0 = np.float64(verts[i0, 0]) - px
            dy0 = np.float64(verts[i0, 1]) - py
            dx1 = np.float64(verts[i1, 0]) - px
            dy1 = np.float64(verts[i1, 1]) - py
            dx2 = np.float64(verts[i2, 0]) - px
            dy2 = np.float64(verts[i2, 1]) - py
            q0 = (dx1 * dy2 - dy1 * dx2) / np.float64(verts[i0, 2])
            q1 = (dx2 * dy0 - dy2 * dx0) / np.float64(verts[i1, 2])
            q2 = (dx0 * dy1 - dy0 * dx1) / np.float64(verts[i2, 2])
            inv = 1.0 / (q0 + q1 + q2)
            bary[n, 0] = q0 * inv
            bary[n, 1] = q1 * inv
            bary[n, 2] = q2 * inv

    @numba.njit(cache=True, nogil=True)
    def bary_backward(verts, faces, pixel_face, pixel_xyb, n_verts, grad_bary, grad_verts):
        """grad_verts += d(sum grad_bary * bary)/d verts (see raster._BaryFunction)."""
        for n in range(pixel_face.shape[0]):
            px, py, i0, i1, i2 = _pixel_corners(n, faces, pixel_face, pixel_xyb, n_verts)
            dx0 = np.float64(verts[i0, 0]) - px
            dy0 = np.float64(verts[i0, 1]) - py
            dx1 = np.float64(verts[i1, 0]) - px
            dy1 = np.float64(verts[i1, 1]) - py
            dx2 = np.float64(verts[i2, 0]) - px
            dy2 = np.float64(verts[i2, 1]) - py
            iw0 = 1.0 / np.float64(verts[i0, 2])
            iw1 = 1.0 / np.float64(verts[i1, 2])
            iw2 = 1.0 / np.float64(verts[i2, 2])
            q0 = (dx1 * dy2 - dy1 * dx2) * iw0
            q1 = (dx2 * dy0 - dy2 * dx0) * iw1
            q2 = (dx0 * dy1 - dy0 * dx1) * iw2
            inv = 1.0 / (q0 + q1 + q2)
            b0 = q0 * inv
            b1 = q1 * inv
            b2 = q2 * inv
            g0 = np.float64(grad_bary[n, 0])
            g1 = np.float64(grad_bary[n, 1])
            g2 = np.float64(grad_bary[n, 2])
            gb = g0 * b0 + g1 * b1 + g2 * b2
            gq0 = (g0 - gb) * inv
            gq1 = (g1 - gb) * inv
            gq2 = (g2 - gb) * inv
            ge0 = gq0 * iw0
            ge1 = gq1 * iw1
            ge2 = gq2 * iw2
            # E_k = dx_{k+1} dy_{k+2} - dy_{k+1} dx_{k+2}
            grad_verts[i0, 0] += ge2 * dy1 - ge1 * dy2
            grad_verts[i0, 1] += ge1 * dx2 - ge2 * dx1
            grad_verts[i0, 2] -= gq0 * q0 * iw0
            grad_verts[i1, 0] += ge0 * dy2 - ge2 * dy0
            grad_verts[i1, 1] += ge2 * dx0 - ge0 * dx2
            grad_verts[i1, 2] -= gq1 * q1 * iw1
            grad_verts[i2, 0] += ge1 * dy0 - ge0 * dy1
            grad_verts[i2, 1] += ge0 * dx1 - ge1 * dx0
            grad_verts[i2, 2] -= gq2 * q2 * iw2

    @numba.njit(cache=True, nogil=True)
    def interp_forward(attr, bary, faces, pixel_index, pixel_face, pixel_xyb, batch_stride,
                       normalize, eps, out, lengths):
        """out[p] = sum_k bary[n, k] attr[corner k]; optionally divided by its length
        (kept in ``lengths`` for the backward). Empty pixels are set to zero."""
        out[:, :] = 0.0
        n_channels = attr.shape[1]
        value = np.empty(n_channels)
        for n in range(pixel_index.shape[0]):
            p = pixel_index[n]
            base = pixel_xyb[n, 2] * batch_stride
            f = pixel_face[n]
            a0 = faces[f, 0] + base
            a1 = faces[f, 1] + base
            a2 = faces[f, 2] + base
            b0 = np.float64(bary[n, 0])
            b1 = np.float64(bary[n, 1])
            b2 = np.float64(bary[n, 2])
            for c in range(n_channels):
                value[c] = b0 * attr[a0, c] + b1 * attr[a1, c] + b2 * attr[a2, c]
            scale = 1.0
            if normalize:
                length = 0.0
                for c in range(n_channels):
                    length += value[c] * value[c]
                length = np.sqrt(length)
                lengths[n] = length
                scale = 1.0 / max(length, eps)
            for c in range(n_channels):
                out[p, c] = value[c] * scale

    @numba.njit(cache=True, nogil=True)
    def interp_backward(attr, bary, faces, pixel_index, pixel_face, pixel_xyb, batch_stride,
                        normalize, eps, out, lengths, grad_out, need_attr, need_bary,
                        grad_attr, grad_bary):
        """Gradients of interp_forward to the attributes and/or the barycentrics."""
        n_channels = attr.shape[1]
        g = np.empty(n_channels)
        for n in range(pixel_index.shape[0]):
            p = pixel_index[n]
            base = pixel_xyb[n, 2] * batch_stride
            f = pixel_face[n]
            a0 = faces[f, 0] + base
            a1 = faces[f, 1] + base
            a2 = faces[f, 2] + base
            for c in range(n_channels):
                g[c] = grad_out[p, c]
            if normalize:  # through o = v / max(|v|, eps)
                length = lengths[n]
                if length > eps:
                    dot = 0.0
                    for c in range(n_channels):
                        dot += np.float64(out[p, c]) * g[c]
                    for c in range(n_channels):
                        g[c] = (g[c] - out[p, c] * dot) / length
                else:
                    for c in range(n_channels):
                        g[c] = g[c] / eps
            if need_bary:
                s0 = 0.0
                s1 = 0.0
                s2 = 0.0
                for c in range(n_channels):
                    s0 += g[c] * attr[a0, c]
                    s1 += g[c] * attr[a1, c]
                    s2 += g[c] * attr[a2, c]
                grad_bary[n, 0] = s0
                grad_bary[n, 1] = s1
                grad_bary[n, 2] = s2
            if need_attr:
                b0 = np.float64(bary[n, 0])
                b1 = np.float64(bary[n, 1])
                b2 = np.float64(bary[n, 2])
                for c in range(n_channels):
                    grad_attr[a0, c] += b0 * g[c]
                    grad_attr[a1, c] += b1 * g[c]
                    grad_attr[a2, c] += b2 * g[c]

    @numba.njit(cache=True, nogil=True, inline="always")
    def _cross_to(ax, ay, bx, by, px, py):
        return (ax - px) * (by - py) - (ay - py) * (bx - px)

    @numba.njit(cache=True, nogil=True)
    def aa_candidates(xy, faces, neighbors, face_id, depth, n_verts):
        """Pixel pairs crossing a silhouette edge; see antialias._silhouette_crossings."""
        n_batch, height, width = face_id.shape
        n_faces = faces.shape[0]
        # screen orientation of every face, and whether it has any silhouette edge
        orient = np.empty((n_batch, n_faces), dtype=np.int8)
        for b in range(n_batch):
            base = b * n_verts
            for f in range(n_faces):
                i0 = faces[f, 0] + base
                i1 = faces[f, 1] + base
                i2 = faces[f, 2] + base
                area = ((xy[i1, 0] - xy[i0, 0]) * (xy[i2, 1] - xy[i0, 1])
                        - (xy[i1, 1] - xy[i0, 1]) * (xy[i2, 0] - xy[i0, 0]))
                orient[b, f] = 1 if area > 0 else (-1 if area < 0 else 0)
        silhouette = np.empty((n_batch, n_faces, 3), dtype=np.bool_)
        has_silhouette = np.zeros((n_batch, n_faces), dtype=np.bool_)
        for b in range(n_batch):
            for f in range(n_faces):
                for k in range(3):
                    g = neighbors[f, k]
                    s = g < 0 or orient[b, g] != orient[b, f]
                    silhouette[b, f, k] = s
                    if s:
                        has_silhouette[b, f] = True

        cap = 2 * n_batch * height * width
        out_front = np.empty(cap, dtype=np.int64)
        out_other = np.empty(cap, dtype=np.int64)
        out_face = np.empty(cap, dtype=np.int64)
        out_edge = np.empty(cap, dtype=np.int64)
        count = 0
        hw = height * width
        for b in range(n_batch):
            base = b * n_verts
            for y in range(height):
                for x in range(width):
                    fa = face_id[b, y, x]
                    for direction in range(2):
                        if direction == 0:
                            if x + 1 >= width:
                                continue
                            yb = y
                            xb = x + 1
                        else:
                            if y + 1 >= height:
                                continue
                            yb = y + 1
                            xb = x
                        fb = face_id[b, yb, xb]
                        if fa == fb:
                            continue
                        da = depth[b, y, x] if fa >= 0 else np.inf
                        db = depth[b, yb, xb] if fb >= 0 else np.inf
                        if da <= db:
                            f = fa
                            fx, fy, ox, oy = x, y, xb, yb
                        else:
                            f = fb
                            fx, fy, ox, oy = xb, yb, x, y
                        if not has_silhouette[b, f]:
                            continue
                        pfx = fx + 0.5
                        pfy = fy + 0.5
                        pox = ox + 0.5
                        poy = oy + 0.5
                        i0 = faces[f, 0] + base
                        i1 = faces[f, 1] + base
                        i2 = faces[f, 2] + base
                        sign = 1.0 if orient[b, f] > 0 else -1.0
                        best_t = np.inf
                        best_k = -1
                        for k in range(3):
                            if k == 0:
                                ia, ib = i1, i2
                            elif k == 1:
                                ia, ib = i2, i0
                            else:
                                ia, ib = i0, i1
                            ef = _cross_to(xy[ia, 0], xy[ia, 1], xy[ib, 0], xy[ib, 1], pfx, pfy)
                            eo = _cross_to(xy[ia, 0], xy[ia, 1], xy[ib, 0], xy[ib, 1], pox, poy)
                            if eo * sign < 0:
                                t = ef / (ef - eo)
                                if t < best_t:
                                    best_t = t
                                    best_k = k
                        if best_k < 0 or not silhouette[b, f, best_k]:
                            continue
                        # an edge is handled by the pair direction it is most across
                        if best_k == 0:
                            ia, ib = i1, i2
                        elif best_k == 1:
                            ia, ib = i2, i0
                        else:
                            ia, ib = i0, i1
                        ex = abs(xy[ib, 0] - xy[ia, 0])
                        ey = abs(xy[ib, 1] - xy[ia, 1])
                        if (direction == 0 and ey < ex) or (direction == 1 and ex < ey):
                            continue
                        out_front[count] = b * hw + fy * width + fx
                        out_other[count] = b * hw + oy * width + ox
                        out_face[count] = f
                        out_edge[count] = best_k
                        count += 1
        return (out_front[:count].copy(), out_other[:count].copy(), out_face[:count].copy(),
                out_edge[:count].copy())

    @numba.njit(cache=True, nogil=True)
    def vertex_normals_forward(verts, faces, eps, normals, lengths):
        """normals[b, v] = unit sum of the (area-weighted) normals of the faces around v."""
        n_batch, n_verts, _ = verts.shape
        acc = np.zeros((n_verts, 3))
        for b in range(n_batch):
            acc[:] = 0.0
            for f in range(faces.shape[0]):
                i0 = faces[f, 0]
                i1 = faces[f, 1]
                i2 = faces[f, 2]
                ax = np.float64(verts[b, i1, 0]) - verts[b, i0, 0]
                ay = np.float64(verts[b, i1, 1]) - verts[b, i0, 1]
                az = np.float64(verts[b, i1, 2]) - verts[b, i0, 2]
                bx = np.float64(verts[b, i2, 0]) - verts[b, i0, 0]
                by = np.float64(verts[b, i2, 1]) - verts[b, i0, 1]
                bz = np.float64(verts[b, i2, 2]) - verts[b, i0, 2]
                nx = ay * bz - az * by
                ny = az * bx - ax * bz
                nz = ax * by - ay * bx
                for i in (i0, i1, i2):
                    acc[i, 0] += nx
                    acc[i, 1] += ny
                    acc[i, 2] += nz
            for v in range(n_verts):
                length = np.sqrt(acc[v, 0] ** 2 + acc[v, 1] ** 2 + acc[v, 2] ** 2)
                lengths[b, v] = length
                scale = 1.0 / max(length, eps)
                normals[b, v, 0] = acc[v, 0] * scale
                normals[b, v, 1] = acc[v, 1] * scale
                normals[b, v, 2] = acc[v, 2] * scale

    @numba.njit(cache=True, nogil=True)
    def vertex_normals_backward(verts, faces, eps, normals, lengths, grad_normals, grad_verts):
        n_batch, n_verts, _ = verts.shape
        grad_acc = np.zeros((n_verts, 3))
        for b in range(n_batch):
            # through the normalisation n = a / max(|a|, eps)
            for v in range(n_verts):
                gx = np.float64(grad_normals[b, v, 0])
                gy = np.float64(grad_normals[b, v, 1])
                gz = np.float64(grad_normals[b, v, 2])
                length = lengths[b, v]
                if length > eps:
                    nx = np.float64(normals[b, v, 0])
                    ny = np.float64(normals[b, v, 1])
                    nz = np.float64(normals[b, v, 2])
                    dot = nx * gx + ny * gy + nz * gz
                    grad_acc[v, 0] = (gx - nx * dot) / length
                    grad_acc[v, 1] = (gy - ny * dot) / length
                    grad_acc[v, 2] = (gz - nz * dot) / length
                else:
                    grad_acc[v, 0] = gx / eps
                    grad_acc[v, 1] = gy / eps
                    grad_acc[v, 2] = gz / eps
            # through the face normals n_f = (p1 - p0) x (p2 - p0)
            for f in range(faces.shape[0]):
                i0 = faces[f, 0]
                i1 = faces[f, 1]
                i2 = faces[f, 2]
                gx = grad_acc[i0, 0] + grad_acc[i1, 0] + grad_acc[i2, 0]
                gy = grad_acc[i0, 1] + grad_acc[i1, 1] + grad_acc[i2, 1]
                gz = grad_acc[i0, 2] + grad_acc[i1, 2] + grad_acc[i2, 2]
                ax = np.float64(verts[b, i1, 0]) - verts[b, i0, 0]
                ay = np.float64(verts[b, i1, 1]) - verts[b, i0, 1]
                az = np.float64(verts[b, i1, 2]) - verts[b, i0, 2]
                bx = np.float64(verts[b, i2, 0]) - verts[b, i0, 0]
                by = np.float64(verts[b, i2, 1]) - verts[b, i0, 1]
                bz = np.float64(verts[b, i2, 2]) - verts[b, i0, 2]
                # d/da (a x b) . g = b x g ; d/db (a x b) . g = g x a
                gax = by * gz - bz * gy
                gay = bz * gx - bx * gz
                gaz = bx * gy - by * gx
                gbx = gy * az - gz * ay
                gby = gz * ax - gx * az
                gbz = gx * ay - gy * ax
                grad_verts[b, i1, 0] += gax
                grad_verts[b, i1, 1] += gay
                grad_verts[b, i1, 2] += gaz
                grad_verts[b, i2, 0] += gbx
                grad_verts[b, i2, 1] += gby
                grad_verts[b, i2, 2] += gbz
                grad_verts[b, i0, 0] -= gax + gbx
                grad_verts[b, i0, 1] -= gay + gby
                grad_verts[b, i0, 2] -= gaz + gbz
