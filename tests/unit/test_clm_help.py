"""``clm --help`` and every sub-command's help: each parses, prints its usage, exits 0."""

from __future__ import annotations

import argparse

import pytest

from clm_cli.main import parser


def commands(p: argparse.ArgumentParser, path: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    """Every command path of the parser tree, the root included."""
    found = [path]
    for action in p._actions:  # argparse has no public walk of sub-parsers
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                found += commands(sub, (*path, name))
    return found


ALL = commands(parser())


def test_every_operator_command_is_there() -> None:
    leaves = {" ".join(c) for c in ALL}
    for expected in (
        "keys create",
        "keys list",
        "keys revoke",
        "webhooks add",
        "customer show",
        "customer list",
        "customer erase",
        "stages",
        "kpis",
        "status",
        "dlq list",
        "dlq show",
        "dlq replay",
        "replay",
        "migrate",
    ):
        assert expected in leaves


@pytest.mark.parametrize("path", ALL, ids=lambda p: " ".join(p) or "clm")
def test_help(path: tuple[str, ...], capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        parser().parse_args([*path, "--help"])
    assert exited.value.code == 0
    out = capsys.readouterr().out
    assert out.startswith("usage: clm")
    assert " ".join(("clm", *path)) in out


def test_a_wrong_command_is_refused_with_usage(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        parser().parse_args(["custmer", "show", "x"])
    assert exited.value.code == 2
    assert "invalid choice: 'custmer'" in capsys.readouterr().err
