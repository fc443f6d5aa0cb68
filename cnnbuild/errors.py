"""Exceptions that carry a message meant for the user, never a traceback."""

from __future__ import annotations


class CnnbuildError(Exception):
    """Base class: the CLI prints these as plain messages and exits with status 2."""


class ConfigError(CnnbuildError, ValueError):
    """A layer or optimizer was given a bad hyperparameter."""


class ShapeError(CnnbuildError, ValueError):
    """A layer cannot accept the shape that reaches it; the message shows the arithmetic."""


class SpecError(CnnbuildError):
    """One or more problems in an architecture file, each already formatted with its location."""

    def __init__(self, problems: list[str], detail: str = "") -> None:
        self.problems = list(problems)
        self.detail = detail
        super().__init__(str(self))

    def __str__(self) -> str:
        text = "\n".join(self.problems)
        return f"{text}\n\n{self.detail}" if self.detail else text
