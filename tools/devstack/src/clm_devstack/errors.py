"""What the devstack tells the developer: progress lines, and its one error type (a cause
and a fix, printed as one line)."""

from __future__ import annotations


class DevstackError(Exception):
    """Something the developer has to act on; ``cause`` says what, ``fix`` says how."""

    def __init__(self, cause: str, fix: str) -> None:
        self.cause = _one_line(cause)
        self.fix = _one_line(fix)
        super().__init__(f"{self.cause} — {self.fix}")

    def one_line(self) -> str:
        """The message the CLI prints on stderr."""
        return f"devstack: error: {self.cause} — {self.fix}"


def _one_line(text: str) -> str:
    return " ".join(text.split())


def say(message: str) -> None:
    """A progress line on stdout, flushed at once (the services' output may interleave)."""
    print(f"devstack: {message}", flush=True)
