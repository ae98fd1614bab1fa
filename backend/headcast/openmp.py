# SPDX-License-Identifier: GPL-3.0-or-later
"""How torch's OpenMP threads wait between operations: set before torch is imported.

The fitting runs hundreds of small tensor operations per step, so each operation's parallel
region is short and the two threads meet at a barrier every few tens of microseconds. How a
thread waits there decides the speed on a small machine:

* OpenMP's default (spin about 300,000 times, then sleep) is fastest on an idle machine but
  spins at every barrier while another job holds the second core: 40-48 s for a 12 s fit
  (2 cores, the synthetic benchmark's single image, a busy process on the other core).
* ``OMP_WAIT_POLICY=PASSIVE`` (sleep at once) survives sharing, but on an idle virtual machine
  every barrier then wakes a halted core: 13-20 s (mean 16.7) for the same fit.
* A short spin (``GOMP_SPINCOUNT=1000``, a few microseconds) catches the next operation on an
  idle machine and gives the core up quickly when it is shared: 11.6-15.8 s idle, 13.3-18.0 s
  shared (same fit, 2026-11-22, several runs each; the machine's own noise is ±20%).

A policy or spin count already in the environment is kept. ``GOMP_SPINCOUNT`` is read by GNU
OpenMP (torch's Linux wheels); other platforms' OpenMP runtimes ignore it and keep their own
defaults (not measured here).
"""
from __future__ import annotations

import os

SPIN_COUNT = "1000"


def set_default_wait_policy() -> None:
    """Give OpenMP a short spin before sleeping, unless the environment says otherwise.
    Only takes effect before torch (its OpenMP runtime) is loaded."""
    if "OMP_WAIT_POLICY" not in os.environ:
        os.environ.setdefault("GOMP_SPINCOUNT", SPIN_COUNT)
