# SPDX-License-Identifier: GPL-3.0-or-later
"""Progress reporting and cancellation between optimisation steps."""
from __future__ import annotations

from typing import Callable, Protocol


class Cancelled(Exception):
    """The caller asked the fit to stop; raised between two optimisation steps."""


class _EventLike(Protocol):
    def is_set(self) -> bool: ...


#: ``progress(stage, frame, total, step, loss)``: stage is one of "camera", "fit", "refine"
#: (the GLS step after one photo, headcast.fit.gls_step), "first_frame", "online", "global";
#: frame is the frame index (-1 for a step over several frames), total the number of frames,
#: step the step within the stage.
ProgressFn = Callable[[str, int, int, int, float], None]


class Monitor:
    """Calls the progress callback and checks the cancellation flag."""

    def __init__(self, progress: ProgressFn | None = None,
                 cancel: Callable[[], bool] | _EventLike | None = None) -> None:
        self.progress = progress
        if cancel is None:
            self._cancelled = lambda: False
        elif hasattr(cancel, "is_set"):
            self._cancelled = cancel.is_set
        elif callable(cancel):
            self._cancelled = cancel
        else:
            raise TypeError("cancel must be a callable returning bool or an object with is_set()")

    def check(self) -> None:
        if self._cancelled():
            raise Cancelled("fit cancelled")

    def step(self, stage: str, frame: int, total: int, step: int, loss: float) -> None:
        """Report one finished step, then honour a pending cancellation."""
        if self.progress is not None:
            self.progress(stage, frame, total, step, float(loss))
        self.check()
