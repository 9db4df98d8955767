"""``clm keys`` and ``clm webhooks`` against the real Postgres."""

from __future__ import annotations

import asyncio

import pytest

from clm_cli import main as cli
from clm_infra.db import create_engine
from clm_infra.schema import webhook_secrets
from clm_infra.settings import CommonSettings
from clm_infra.webhook_secrets import active_secrets, cipher
from clm_web.auth import KeyVerifier


def run(args: list[str]) -> int:
    """The CLI's main runs its own event loop: give it a thread of its own."""
    return cli.main(args)


async def clm(args: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    status = await asyncio.to_thread(run, args)
    out, err = capsys.readouterr()
    return status, out, err


async def test_keys_create_list_revoke(
    common: CommonSettings, capsys: pytest.CaptureFixture[str]
) -> None:
    status, out, _ = await clm(["keys", "create", "--source", "shop-eu", "--label", "eu"], capsys)
    assert status == 0
    key = out.strip()
    assert key.startswith("clmw_")
    engine = create_engine(common.database.url, pool_size=1)
    verifier = KeyVerifier(engine, ttl_s=0)
    principal = await verifier.verify(key)
    assert principal is not None
    assert (principal.kind, principal.source) == ("write", "shop-eu")

    status, out, _ = await clm(["keys", "list"], capsys)
    line = next(line for line in out.splitlines() if "shop-eu" in line)
    key_id, kind, source, state, label = line.split("\t")
    assert (kind, source, state, label) == ("write", "shop-eu", "active", "eu")
    assert key not in out  # never the secret

    assert (await clm(["keys", "revoke", key_id], capsys))[0] == 0
    assert await verifier.verify(key) is None
    status, _, err = await clm(["keys", "revoke", key_id], capsys)
    assert status == 1
    assert "no active key" in err
    status, out, _ = await clm(["keys", "create", "--source", "bi", "--kind", "read"], capsys)
    assert out.startswith("clmr_")
    await engine.dispose()


async def test_webhook_secrets_are_stored_encrypted_and_usable(
    common: CommonSettings, capsys: pytest.CaptureFixture[str]
) -> None:
    status, out, _ = await clm(
        ["webhooks", "add", "--source", "shop-eu", "--provider", "stripe", "--secret", "whsec_abc"],
        capsys,
    )
    assert status == 0
    status, out, _ = await clm(
        ["webhooks", "add", "--source", "reviews", "--provider", "generic"], capsys
    )
    generic_id, generated = out.strip().split("\t")
    assert generated.startswith("clmwh_")
    engine = create_engine(common.database.url, pool_size=1)
    async with engine.connect() as conn:
        stored = [r.secret_encrypted for r in await conn.execute(webhook_secrets.select())]
        assert all("whsec_abc" not in s and generated not in s for s in stored)
        assert await active_secrets(conn, cipher(common), "stripe") == [("shop-eu", b"whsec_abc")]
        assert await active_secrets(conn, cipher(common), "generic") == [
            ("reviews", generated.encode())
        ]
    status, out, _ = await clm(["webhooks", "list"], capsys)
    assert "stripe\tshop-eu\tactive" in out
    assert "whsec_abc" not in out
    assert (await clm(["webhooks", "revoke", generic_id], capsys))[0] == 0
    async with engine.connect() as conn:
        assert await active_secrets(conn, cipher(common), "generic") == []
    await engine.dispose()


async def test_prod_needs_a_secrets_key(
    common: CommonSettings, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CLM_ENV", "prod")
    status, _, err = await clm(
        ["webhooks", "add", "--source", "s", "--provider", "shopify"], capsys
    )
    assert status == 2
    assert "CLM_SECRETS_KEY" in err
    status, key, _ = await clm(["webhooks", "new-key"], capsys)
    assert status == 0
    monkeypatch.setenv("CLM_SECRETS_KEY", key.strip())
    status, _, _ = await clm(["webhooks", "add", "--source", "s", "--provider", "shopify"], capsys)
    assert status == 0
