# SPDX-License-Identifier: GPL-3.0-or-later
"""Errors users see, each with a stable code the CLI, the worker and the add-on report."""
from __future__ import annotations


class HeadcastError(Exception):
    """An expected failure: bad input, missing model, no face. Never shown as a traceback."""

    code = "error"

    def __init__(self, message: str, file: str | None = None, code: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.file = None if file is None else str(file)
        if code is not None:
            self.code = code

    def __str__(self) -> str:
        return f"{self.file}: {self.message}" if self.file and self.file not in self.message else self.message


class InputError(HeadcastError):
    code = "bad_input"


class MissingFileError(HeadcastError):
    code = "missing_file"


class UnreadableMediaError(HeadcastError):
    code = "unreadable_media"


class NoFaceError(HeadcastError):
    code = "no_face"


class ModelError(HeadcastError):
    code = "model_error"


class ModelFileError(HeadcastError, ValueError):
    """A model or asset file is missing, truncated or not in the expected layout."""

    code = "model_error"

    def __init__(self, path, message: str) -> None:
        self.path = str(path)
        super().__init__(f"{self.path}: {message}", file=self.path)


class Cancelled(HeadcastError):
    code = "cancelled"

    def __init__(self, message: str = "cancelled") -> None:
        super().__init__(message)


def describe(exc: BaseException) -> dict:
    """The ``{code, message, file}`` triple for any exception (unexpected ones become 'internal')."""
    from .config import ConfigError

    if isinstance(exc, HeadcastError):
        return {"code": exc.code, "message": exc.message, "file": exc.file}
    if isinstance(exc, ConfigError):
        return {"code": "config_error", "message": str(exc), "file": None}
    # The format and footage modules keep their own ValueError subclasses with a ``path``
    # (ResultFileError, FootageError) so that they stay importable without this package.
    if isinstance(exc, ValueError) and hasattr(exc, "path"):
        code = "unreadable_media" if type(exc).__name__ == "FootageError" else "bad_input"
        return {"code": code, "message": str(exc), "file": str(exc.path)}
    if type(exc).__name__ in ("CueError", "EmbeddingError"):
        return {"code": "bad_input", "message": str(exc), "file": None}
    if isinstance(exc, FileNotFoundError):
        return {"code": "missing_file", "message": f"file not found: {exc.filename}", "file": exc.filename}
    return {"code": "internal", "message": f"{type(exc).__name__}: {exc}", "file": None}
