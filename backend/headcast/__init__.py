# SPDX-License-Identifier: GPL-3.0-or-later
"""Headcast backend: FLAME model, differentiable rendering, priors and fitting."""

__version__ = "0.1.0"
