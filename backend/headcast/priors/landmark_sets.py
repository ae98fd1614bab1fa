# SPDX-License-Identifier: GPL-3.0-or-later
"""Named subsets of MediaPipe's 478 face-mesh landmarks, derived from MediaPipe's own data.

Nothing here is typed in by hand: every list is derived at import time from the connection
sets MediaPipe publishes in ``mediapipe.python.solutions.face_mesh_connections`` (the
``FACEMESH_*`` frozensets of directed edges, mediapipe 0.10.21):

* ``FACEMESH_LEFT_EYE`` / ``RIGHT_EYE``: two directed chains from the outer to the inner eye
  corner; the upper eyelid is the chain fewer mesh edges away from the same side's eyebrow
  (``FACEMESH_*_EYEBROW``), hop counts taken in ``FACEMESH_TESSELATION``;
* ``FACEMESH_LIPS``: four chains between two pairs of mouth corners; the outer pair is the
  one closer (in tessellation hops) to the face oval, and each pair's upper chain is the one
  closer to the nose (``FACEMESH_NOSE``);
* ``FACEMESH_FACE_OVAL``: a closed loop, listed in edge order;
* ``FACEMESH_LEFT_IRIS`` / ``RIGHT_IRIS``: 4-point rings. ``refine_landmarks=True`` appends
  two blocks of five iris points (468..477), centre first, so each ring's centre is
  ``min(ring) - 1``.

"Left" and "right" are MediaPipe's, i.e. the subject's: the left eye appears on the image's
right in an unmirrored photo, and FLAME's +x points to it.
"""
from __future__ import annotations

from collections import deque

N_LANDMARKS = 478  # 468 face-mesh points + 10 iris points (refine_landmarks=True)


def _connections():
    """MediaPipe's ``face_mesh_connections`` module.

    It is plain data (no imports), so it is loaded straight from the installed package's file:
    importing ``mediapipe`` itself would load its native framework (about a second).
    """
    import importlib.util
    from pathlib import Path

    spec = importlib.util.find_spec("mediapipe")
    if spec is not None and spec.submodule_search_locations:
        path = Path(list(spec.submodule_search_locations)[0]) / "python" / "solutions" / "face_mesh_connections.py"
        if path.is_file():
            file_spec = importlib.util.spec_from_file_location("_headcast_face_mesh_connections", path)
            module = importlib.util.module_from_spec(file_spec)
            file_spec.loader.exec_module(module)
            return module
    from mediapipe.python.solutions import face_mesh_connections

    return face_mesh_connections


def _adjacency(edges) -> dict[int, set[int]]:
    adj: dict[int, set[int]] = {}
    for a, b in edges:
        adj.setdefault(a, set()).add(b)
        adj.setdefault(b, set()).add(a)
    return adj


def _hops(adj: dict[int, set[int]], sources: set[int]) -> dict[int, int]:
    """Breadth-first hop counts from a set of vertices."""
    dist = {s: 0 for s in sources}
    queue = deque(sources)
    while queue:
        v = queue.popleft()
        for w in adj.get(v, ()):
            if w not in dist:
                dist[w] = dist[v] + 1
                queue.append(w)
    return dist


def _directed_chains(edges, start: int, end: int) -> list[list[int]]:
    """All simple paths start -> end along the directed edges (MediaPipe's eye/lip chains)."""
    nxt: dict[int, list[int]] = {}
    for a, b in edges:
        nxt.setdefault(a, []).append(b)
    chains = []
    for first in sorted(nxt.get(start, [])):
        chain = [start, first]
        while chain[-1] != end:
            follow = nxt.get(chain[-1], [])
            if len(follow) != 1:
                raise ValueError(f"MediaPipe chain from {start} branches at {chain[-1]}")
            chain.append(follow[0])
        chains.append(chain)
    return chains


def _endpoints(edges) -> tuple[list[int], list[int]]:
    heads = {a for a, _ in edges}
    tails = {b for _, b in edges}
    return sorted(heads - tails), sorted(tails - heads)


def _loop(edges) -> list[int]:
    nxt = dict(edges)
    start = min(nxt)
    loop = [start]
    while nxt[loop[-1]] != start:
        loop.append(nxt[loop[-1]])
    if len(loop) != len(nxt):
        raise ValueError("MediaPipe loop is not a single cycle")
    return loop


def _mean_hops(chain, hops) -> float:
    inner = chain[1:-1] or chain
    return sum(hops[v] for v in inner) / len(inner)


def _derive() -> dict[str, tuple[int, ...]]:
    fmc = _connections()
    adj = _adjacency(fmc.FACEMESH_TESSELATION)
    vertices = lambda edges: {v for e in edges for v in e}  # noqa: E731
    sets: dict[str, tuple[int, ...]] = {}
    for side, eye, brow in (("left", fmc.FACEMESH_LEFT_EYE, fmc.FACEMESH_LEFT_EYEBROW),
                            ("right", fmc.FACEMESH_RIGHT_EYE, fmc.FACEMESH_RIGHT_EYEBROW)):
        (outer,), (inner,) = _endpoints(eye)
        chains = _directed_chains(eye, outer, inner)
        brow_hops = _hops(adj, vertices(brow))
        upper, lower = sorted(chains, key=lambda c: _mean_hops(c, brow_hops))
        sets[f"{side}_eye_upper"] = tuple(upper)  # outer corner -> inner corner
        sets[f"{side}_eye_lower"] = tuple(lower)
        sets[f"{side}_eye"] = tuple(upper + lower[-2:0:-1])  # closed contour
        sets[f"{side}_eye_corners"] = (outer, inner)
        ring = _loop(getattr(fmc, f"FACEMESH_{side.upper()}_IRIS"))
        sets[f"{side}_iris_ring"] = tuple(ring)
        sets[f"{side}_iris_centre"] = (min(ring) - 1,)
        sets[f"{side}_eyebrow"] = tuple(sorted(vertices(brow)))
    oval = _loop(fmc.FACEMESH_FACE_OVAL)
    sets["face_oval"] = tuple(oval)
    oval_hops = _hops(adj, set(oval))
    nose_hops = _hops(adj, vertices(fmc.FACEMESH_NOSE))
    starts, ends = _endpoints(fmc.FACEMESH_LIPS)
    reach = _adjacency(())
    for a, b in fmc.FACEMESH_LIPS:
        reach.setdefault(a, set()).add(b)
    pairs = []
    for s in starts:  # each start corner reaches exactly one end corner along the directed edges
        seen, stack = {s}, [s]
        while stack:
            for w in reach.get(stack.pop(), ()):
                if w not in seen:
                    seen.add(w)
                    stack.append(w)
        (e,) = [t for t in ends if t in seen]
        pairs.append((s, e))
    (outer_pair, inner_pair) = sorted(pairs, key=lambda p: oval_hops[p[0]] + oval_hops[p[1]])
    for name, (s, e) in (("outer", outer_pair), ("inner", inner_pair)):
        upper, lower = sorted(_directed_chains(fmc.FACEMESH_LIPS, s, e), key=lambda c: _mean_hops(c, nose_hops))
        sets[f"lips_{name}_upper"] = tuple(upper)  # corner -> corner
        sets[f"lips_{name}_lower"] = tuple(lower)
        sets[f"lips_{name}"] = tuple(upper + lower[-2:0:-1])
    # the mouth corner nearer the subject's left eye is the left corner
    eye_hops = _hops(adj, set(sets["left_eye"]))
    right_corner, left_corner = sorted(outer_pair, key=lambda v: -eye_hops[v])
    sets["mouth_corners"] = (right_corner, left_corner)
    sets["nose"] = tuple(sorted(vertices(fmc.FACEMESH_NOSE)))
    # groups the fitting uses
    sets["eyes"] = sets["right_eye"] + sets["left_eye"]
    sets["eyelids"] = (sets["right_eye_upper"] + sets["right_eye_lower"][1:-1]
                       + sets["left_eye_upper"] + sets["left_eye_lower"][1:-1])
    sets["iris"] = sets["right_iris_centre"] + sets["right_iris_ring"] + sets["left_iris_centre"] + sets["left_iris_ring"]
    sets["mouth"] = sets["lips_outer"] + sets["lips_inner"]
    sets["contour"] = sets["face_oval"]
    return sets


LANDMARK_SETS: dict[str, tuple[int, ...]] = _derive()

LEFT_IRIS_CENTRE = LANDMARK_SETS["left_iris_centre"][0]
RIGHT_IRIS_CENTRE = LANDMARK_SETS["right_iris_centre"][0]
IRIS_INDICES = tuple(sorted(LANDMARK_SETS["iris"]))


def landmark_set(name: str) -> tuple[int, ...]:
    """MediaPipe indices of a named subset (see ``LANDMARK_SETS`` for the names)."""
    try:
        return LANDMARK_SETS[name]
    except KeyError:
        raise KeyError(f"unknown landmark set {name!r}; known: {', '.join(sorted(LANDMARK_SETS))}") from None
