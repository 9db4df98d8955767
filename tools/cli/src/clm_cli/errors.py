"""The refusal every command raises when the operator can act on it."""

from __future__ import annotations


class CliError(Exception):
    """A refusal the operator can act on: printed as ``clm: error: …``, exit status 1 or 2."""

    def __init__(self, message: str, status: int = 1) -> None:
        super().__init__(message)
        self.status = status
