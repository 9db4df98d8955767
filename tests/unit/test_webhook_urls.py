"""The webhook URL policy (server-side request forgery), on given DNS answers."""

from __future__ import annotations

import pytest

from clm_infra.webhook_urls import (
    Resolver,
    UrlPolicy,
    UrlRefused,
    check,
    delivery_target,
    refusal,
    resolve,
)

STRICT = UrlPolicy()
PUBLIC = "93.184.215.14"


def fixed(*addresses: str) -> Resolver:
    async def resolver(host: str, port: int) -> list[str]:
        return list(addresses)

    return resolver


#: Non-public addresses, each named literally as a URL's host.
LITERAL = (
    "127.0.0.1",
    "::1",
    "10.0.0.1",
    "192.168.1.9",
    "172.16.0.1",
    "100.64.0.1",  # shared address space (CGNAT)
    "0.0.0.0",  # noqa: S104 - an address under test
    "::",
    "224.0.0.1",
    "240.0.0.1",
    "fe80::1",
    "fc00::1",
    "::ffff:127.0.0.1",
    "::ffff:169.254.169.254",
)


def hook_url(address: str) -> str:
    """``https://<address>/hook`` (an IPv6 address in brackets)."""
    host = f"[{address}]" if ":" in address else address
    return f"https://{host}/hook"


@pytest.mark.parametrize(
    ("url", "addresses"),
    [
        *((hook_url(a), [a]) for a in LITERAL),
        ("https://169.254.169.254/latest/meta-data", ["169.254.169.254"]),
        ("https://rebound.example/hook", [PUBLIC, "127.0.0.1"]),  # any bad address refuses
        ("https://internal.example/hook", ["10.1.2.3"]),
    ],
)
def test_non_public_addresses_are_refused(url: str, addresses: list[str]) -> None:
    why = refusal(url, addresses, STRICT)
    assert why is not None
    assert "non-public" in why


def test_https_to_a_public_address_is_accepted() -> None:
    assert refusal("https://hooks.example/in", [PUBLIC], STRICT) is None
    assert refusal("https://hooks.example/in", ["2606:4700::1111"], STRICT) is None


def test_http_needs_the_insecure_setting() -> None:
    assert "https" in (refusal("http://hooks.example/in", [PUBLIC], STRICT) or "")
    assert refusal("http://hooks.example/in", [PUBLIC], UrlPolicy(allow_insecure=True)) is None


def test_other_schemes_credentials_and_unresolvable_hosts_are_refused() -> None:
    assert refusal("ftp://hooks.example/in", [PUBLIC], STRICT) is not None
    assert refusal("https://user:pw@hooks.example/in", [PUBLIC], STRICT) is not None
    assert "does not resolve" in (refusal("https://nowhere.example/", [], STRICT) or "")


def test_the_allow_list_names_hosts_not_addresses_in_general() -> None:
    policy = UrlPolicy.of(True, "127.0.0.1, Receiver.Internal ,[::1]")
    assert policy.allowed_hosts == {"127.0.0.1", "receiver.internal", "::1"}
    assert refusal("http://127.0.0.1:9000/hook", ["127.0.0.1"], policy) is None
    assert refusal("https://receiver.internal/hook", ["10.0.0.5"], policy) is None
    assert refusal("https://[::1]/hook", ["::1"], policy) is None
    assert refusal("https://other.internal/hook", ["10.0.0.5"], policy) is not None
    # allowed by name, the scheme rule still holds
    assert refusal("http://receiver.internal/hook", [], UrlPolicy.of(False, "receiver.internal"))


async def test_a_name_resolving_to_loopback_is_refused_on_real_dns() -> None:
    assert "127.0.0.1" in await resolve("localhost", 443) or "::1" in await resolve(
        "localhost", 443
    )
    why = await check("https://localhost/hook", STRICT)
    assert why is not None
    assert "non-public" in why
    assert await check("https://localhost/hook", UrlPolicy.of(False, "localhost")) is None


async def test_delivery_connects_to_the_address_it_checked() -> None:
    target = await delivery_target("https://hooks.example:8443/in?x=1", STRICT, fixed(PUBLIC))
    assert target.url == f"https://{PUBLIC}:8443/in?x=1"
    assert target.headers == {"Host": "hooks.example:8443"}
    assert target.extensions == {"sni_hostname": "hooks.example"}
    v6 = await delivery_target("https://hooks.example/in", STRICT, fixed("2606:4700::1111"))
    assert v6.url == "https://[2606:4700::1111]/in"


async def test_delivery_refuses_a_host_whose_dns_now_answers_private() -> None:
    with pytest.raises(UrlRefused, match="non-public"):
        await delivery_target("https://hooks.example/in", STRICT, fixed("169.254.169.254"))
    with pytest.raises(UrlRefused):
        await delivery_target("http://hooks.example/in", STRICT, fixed(PUBLIC))
