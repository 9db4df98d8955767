"""``clm privacy``: the master keys that wrap the customers' data keys (docs/operations.md,
"Master key rotation")."""

from __future__ import annotations

import argparse
import asyncio
import time

from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from clm_cli import output
from clm_cli.errors import CliError
from clm_cli.settings import CliSettings
from clm_infra.db import create_engine
from clm_infra.privacy.ciphers import (
    MasterKeyMissing,
    MasterKeys,
    Undecryptable,
    master_keys,
    new_master_key,
)
from clm_infra.privacy.store import count_by_master, rewrap_page
from clm_infra.settings import CommonSettings

#: How long a rotation waits for keys another rotation holds before it gives up.
HELD_WAIT_S = 30.0


def _masters(settings: CommonSettings) -> MasterKeys:
    try:
        return master_keys(settings)
    except MasterKeyMissing as exc:
        raise CliError(str(exc), 2) from exc


def _pending(counts: dict[str, int], masters: MasterKeys) -> int:
    """Data keys under a configured master key that is not the current one."""
    return sum(n for m, n in counts.items() if m in masters.ids and m != masters.current_id)


def _unknown(counts: dict[str, int], masters: MasterKeys) -> dict[str, int]:
    return {m: n for m, n in sorted(counts.items()) if m not in masters.ids}


def _unknown_message(unknown: dict[str, int], masters: MasterKeys) -> str:
    listed = ", ".join(f"{m} ({n} keys)" for m, n in unknown.items())
    return (
        f"data keys under master keys that are not configured: {listed}; configured: "
        f"{', '.join(masters.ids)} — add the missing ones to CLM_PRIVACY_MASTER_KEYS after the "
        "current one and run again (without them those customers' personal fields stay sealed)"
    )


async def _new_master_key(_: argparse.Namespace, __: CliSettings) -> int:
    print(new_master_key())
    return 0


def _state(master_id: str, masters: MasterKeys) -> str:
    if master_id == masters.current_id:
        return "current"
    return "to re-wrap" if master_id in masters.ids else "not configured"


async def _status(args: argparse.Namespace, settings: CommonSettings, conn: AsyncConnection) -> int:
    masters = _masters(settings)
    counts = await count_by_master(conn)
    ids = [*masters.ids, *_unknown(counts, masters)]
    rows = [(m, counts.get(m, 0), _state(m, masters)) for m in ids]
    pending, unknown = _pending(counts, masters), _unknown(counts, masters)
    if args.json:
        output.print_json(
            {
                "current": masters.current_id,
                "master_keys": [{"id": m, "data_keys": n, "state": s} for m, n, s in rows],
                "data_keys": sum(counts.values()),
                "to_rewrap": pending,
                "not_configured": unknown,
            }
        )
        return 0
    print(output.table(("master key", "data keys", "state"), rows))
    print(
        f"{sum(counts.values())} data keys; {pending} to re-wrap under {masters.current_id}"
        + (" (clm privacy rotate)" if pending else "")
    )
    if unknown:
        print(f"warning: {_unknown_message(unknown, masters)}")
    return 0


async def _rotate(args: argparse.Namespace, settings: CliSettings) -> int:
    masters = _masters(settings)
    engine = create_engine(settings.database.url, pool_size=1, app_name="clm-cli")
    try:
        async with engine.connect() as conn:
            counts = await count_by_master(conn)
        unknown = _unknown(counts, masters)
        if unknown:
            raise CliError(f"{_unknown_message(unknown, masters)}; nothing was re-wrapped", 2)
        pending = _pending(counts, masters)
        print(f"rotate: {pending} data keys to re-wrap under {masters.current_id}")
        done = await _rewrap_all(engine, masters, args.batch)
    finally:
        await engine.dispose()
    print(f"rotate: done, {done} data keys re-wrapped; every one is under {masters.current_id}")
    return 0


async def _rewrap_all(engine: AsyncEngine, masters: MasterKeys, batch: int) -> int:
    """Re-wrap page after page (a transaction each) until no key is under an older master
    key; wait for the keys another rotation holds (it commits them, or leaves them to us)."""
    done, after, deadline = 0, None, None
    while True:
        try:
            async with engine.begin() as conn:
                subjects = await rewrap_page(conn, masters, batch, after)
        except Undecryptable as exc:
            raise CliError(f"{exc}; {done} data keys were re-wrapped, the rest are not", 2) from exc
        if subjects:
            done, after, deadline = done + len(subjects), subjects[-1], None
            print(f"rotate: {done} re-wrapped", flush=True)
            continue
        async with engine.connect() as conn:
            counts = await count_by_master(conn)
        left, unknown = _pending(counts, masters), _unknown(counts, masters)
        if unknown:
            message = _unknown_message(unknown, masters)
            raise CliError(f"{message}; {done} data keys were re-wrapped before", 2)
        if not left:
            return done
        deadline = deadline or time.monotonic() + HELD_WAIT_S
        if time.monotonic() > deadline:
            raise CliError(
                f"{done} data keys re-wrapped; {left} are still held by another transaction "
                "(another rotation?) — run again",
                1,
            )
        after = None  # from the start: what another rotation held may have been left to us
        await asyncio.sleep(0.2)


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError("must be at least 1")
    return value


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    group = sub.add_parser(
        "privacy", help="master keys of the customers' data keys: new key, status, rotation"
    )
    cmds = group.add_subparsers(dest="action", required=True)
    cmds.add_parser(
        "new-master-key",
        help="print a new master key entry (id:key) for CLM_PRIVACY_MASTER_KEYS",
    ).set_defaults(action_fn=_new_master_key)
    cmds.add_parser(
        "status",
        parents=[output.json_parent()],
        help="data keys per master key: which is current, how many to re-wrap",
    ).set_defaults(handler=_status)
    rotate = cmds.add_parser(
        "rotate",
        help="re-wrap every data key under the current (first) master key, a page at a time",
    )
    rotate.add_argument(
        "--batch", type=_positive, default=500, help="data keys per transaction (default 500)"
    )
    rotate.set_defaults(action_fn=_rotate)
