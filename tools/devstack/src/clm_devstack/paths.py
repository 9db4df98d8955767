"""Where the repository, the state directories and a server's data and logs are."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from clm_devstack.errors import DevstackError

_MARKER = Path("deploy") / "kafka" / "pom.xml"


def find_repo_root(start: Path | None = None) -> Path:
    """The repository root: ``CLM_REPO_ROOT``, or the first parent holding deploy/kafka/pom.xml."""
    override = os.environ.get("CLM_REPO_ROOT")
    if override:
        root = Path(override).resolve()
        if (root / _MARKER).is_file():
            return root
        raise DevstackError(
            f"CLM_REPO_ROOT={override} has no {_MARKER}",
            "point CLM_REPO_ROOT at the clm-stream checkout or unset it",
        )
    candidates = [start or Path.cwd(), Path(__file__).resolve()]
    for candidate in candidates:
        for directory in [candidate, *candidate.parents]:
            if (directory / _MARKER).is_file():
                return directory.resolve()
    raise DevstackError(
        f"cannot find the repository root (no {_MARKER} above {Path.cwd()})",
        "run the command from inside the clm-stream checkout",
    )


@dataclass(frozen=True)
class ServerDirs:
    """Where a local server keeps its state: ``data/`` and ``logs/`` under ``state_dir``."""

    state_dir: Path

    @property
    def data_dir(self) -> Path:
        return self.state_dir / "data"

    @property
    def logs_dir(self) -> Path:
        return self.state_dir / "logs"


def dev_state_dir(repo_root: Path) -> Path:
    return repo_root / ".run" / "dev"


def testing_state_dir(repo_root: Path, ports: tuple[int, int, int]) -> Path:
    """``.run/test`` for the default ports; ``.run/test-<kafka>-<controller>-<pg>`` otherwise, so
    two test stacks on different ports (say, two engineers on one machine) never share state,
    and neither stops the other's servers as leftovers."""
    if ports == (19092, 19093, 55433):
        return repo_root / ".run" / "test"
    return repo_root / ".run" / ("test-" + "-".join(str(p) for p in ports))
