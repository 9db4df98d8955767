"""``clm --help`` and every sub-command's help: each parses, prints its usage, exits 0."""

from __future__ import annotations

import argparse

import pytest

from clm_cli.main import ALL as EVERY_COMMAND
from clm_cli.main import COMMANDS, parser


def commands(p: argparse.ArgumentParser, path: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    """Every command path of the parser tree, the root included."""
    found = [path]
    for action in p._actions:  # argparse has no public walk of sub-parsers
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                found += commands(sub, (*path, name))
    return found


ALL = commands(parser(EVERY_COMMAND))


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
        "model fit",
        "privacy new-master-key",
        "privacy status",
        "privacy rotate",
    ):
        assert expected in leaves


@pytest.mark.parametrize("path", ALL, ids=lambda p: " ".join(p) or "clm")
def test_help(path: tuple[str, ...], capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        parser(path[0] if path else None).parse_args([*path, "--help"])
    assert exited.value.code == 0
    out = capsys.readouterr().out
    assert out.startswith("usage: clm")
    assert " ".join(("clm", *path)) in out


def test_a_wrong_command_is_refused_with_usage(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        parser("custmer").parse_args(["custmer", "show", "x"])
    assert exited.value.code == 2
    assert "invalid choice: 'custmer'" in capsys.readouterr().err


def test_the_listing_names_every_command_without_loading_them(
    capsys: pytest.CaptureFixture[str],
) -> None:
    with pytest.raises(SystemExit):
        parser(None).parse_args(["--help"])
    out = capsys.readouterr().out
    for name, (_, summary) in COMMANDS.items():
        assert f"{name}" in out
        assert summary.split()[0] in out
    assert {p[0] for p in ALL if p} == set(COMMANDS)
