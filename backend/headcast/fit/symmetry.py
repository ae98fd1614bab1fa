# SPDX-License-Identifier: GPL-3.0-or-later
"""Mirror-symmetry prior on the shaped mesh (Pixel3DMM's tracker has one on the identity-
plus-expression mesh before posing; see ``/work/shared/reference/pixel3dmm.md`` §4.3).

A single view sees one side of a turned face only at grazing angles or not at all; the other
side tells what it looks like, because faces are nearly mirror-symmetric. The prior is the
mean squared distance between each vertex of the shaped mesh (template + identity + optionally
expression blendshapes, rest pose) and its mirror partner reflected through the x = 0 plane.

The partner of a vertex is the template vertex nearest to its reflection, kept when closer
than a tolerance, so a template that is only nearly symmetric still pairs up; vertices without
a partner are left out, and partners need not be mutual (the official index is a mutual pairing
for most but not all of FLAME's vertices). The shaped mesh is linear in the coefficients, so the residuals are
``r = a0 + A_shape @ beta + A_expr @ psi`` with ``A`` precomputed.
"""
from __future__ import annotations

import numpy as np
import torch

REFLECT = np.array([-1.0, 1.0, 1.0])


def mirror_partners(verts: np.ndarray, tol: float) -> np.ndarray:
    """For each vertex the index of the vertex nearest to its reflection through x = 0, or -1
    where that is farther than ``tol`` (same units as ``verts``)."""
    from scipy.spatial import cKDTree

    dist, idx = cKDTree(verts).query(verts * REFLECT, k=1)
    return np.where(dist <= tol, idx, -1).astype(np.int64)


class MirrorPrior:
    """Residuals of the mirror-symmetry prior as a linear function of the coefficients.

    ``shapedirs`` ``[V, 3, Ks]``, ``exprdirs`` ``[V, 3, Ke]`` (or None: the expression is not
    part of the prior), ``template`` ``[V, 3]``. ``tol``: partner tolerance in model units.
    """

    def __init__(self, template: np.ndarray, shapedirs: np.ndarray, exprdirs: np.ndarray | None,
                 tol: float, dtype: torch.dtype = torch.float32) -> None:
        template = np.asarray(template, dtype=np.float64)
        partner = mirror_partners(template, tol)
        i = np.nonzero(partner >= 0)[0]
        j = partner[i]
        self.n_paired = len(i)
        self.fraction = self.n_paired / max(len(template), 1)
        # one residual per paired vertex (partners need not be mutual), scaled so that the sum
        # of squares is the mean over the P paired vertices
        sw = 1.0 / np.sqrt(max(self.n_paired, 1))
        s = REFLECT[None, :, None]

        def asym(dirs):
            d = np.asarray(dirs, dtype=np.float64)
            return (d[i] - s * d[j]).reshape(len(i) * 3, -1) * sw

        self.offset = torch.as_tensor((template[i] - REFLECT * template[j]).reshape(-1) * sw, dtype=dtype)
        self.shape_matrix = torch.as_tensor(asym(shapedirs), dtype=dtype)  # [3P, Ks]
        self.expr_matrix = None if exprdirs is None else torch.as_tensor(asym(exprdirs), dtype=dtype)

    def residuals(self, shape: torch.Tensor, expression: torch.Tensor | None) -> torch.Tensor:
        """Weighted residuals ``[B, 3P]`` (their squared sum is the mean squared mirror distance):
        ``shape`` ``[Ks]`` (shared) or ``[B, Ks]``, ``expression`` ``[B, Ke]`` or None."""
        ks = shape.shape[-1]
        r = self.offset + shape.reshape(-1, ks) @ self.shape_matrix[:, :ks].T
        if expression is not None and self.expr_matrix is not None:
            ke = expression.shape[-1]
            r = r + expression @ self.expr_matrix[:, :ke].T
        return r

    def energy(self, shape: torch.Tensor, expression: torch.Tensor | None) -> torch.Tensor:
        """Mean squared distance between paired vertices of the shaped mesh, per row ``[B]``."""
        return self.residuals(shape, expression).pow(2).sum(-1)
