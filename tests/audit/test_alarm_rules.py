"""Which webhook addresses kmsweb calls: public ones only, IPv4 embedded in IPv6 included.

Pure and table-driven: ``address_blocked`` judges one resolved address, as
``resolve_webhook`` does for every address a webhook's host resolves to,
when an alarm is saved and again before each delivery.
"""

from __future__ import annotations

import ipaddress

import pytest

from audit.alarm_rules import address_blocked, embedded_ipv4

BLOCKED = [
    ("127.0.0.1", "loopback"),
    ("10.1.2.3", "private"),
    ("169.254.169.254", "link-local (cloud metadata)"),
    ("0.0.0.0", "unspecified"),
    ("100.64.0.1", "shared address space"),
    ("::1", "IPv6 loopback"),
    ("fe80::1", "IPv6 link-local"),
    ("fd00::1", "IPv6 unique local"),
    ("::ffff:127.0.0.1", "IPv4-mapped loopback"),
    ("::ffff:169.254.169.254", "IPv4-mapped link-local"),
    ("2002:7f00:1::", "6to4 of 127.0.0.1"),
    ("2002:7f00:1::1", "6to4 of 127.0.0.1, another host"),
    ("2002:a01:203::", "6to4 of 10.1.2.3"),
    ("2002:a9fe:a9fe::1", "6to4 of 169.254.169.254"),
    ("2002:c0a8:1::", "6to4 of 192.168.0.1"),
    ("2001:0:4136:e378:8000:63bf:80ff:fffe", "Teredo, client 127.0.0.1"),
    ("2001:0:7f00:1::1", "Teredo, server 127.0.0.1"),
    ("64:ff9b::7f00:1", "NAT64 of 127.0.0.1"),
    ("64:ff9b::a9fe:a9fe", "NAT64 of 169.254.169.254"),
    ("::7f00:1", "IPv4-compatible 127.0.0.1"),
    ("::a01:203", "IPv4-compatible 10.1.2.3"),
]
ALLOWED = [
    ("8.8.8.8", "public IPv4"),
    ("2606:4700:4700::1111", "public IPv6"),
    ("::ffff:8.8.8.8", "IPv4-mapped public"),
    ("2002:808:808::1", "6to4 of a public address"),
]


@pytest.mark.parametrize(("text", "why"), BLOCKED, ids=[why for _, why in BLOCKED])
def test_it_blocks_non_public_addresses_and_ipv6_forms_that_embed_them(text: str, why: str) -> None:
    assert address_blocked(ipaddress.ip_address(text)), why


@pytest.mark.parametrize(("text", "why"), ALLOWED, ids=[why for _, why in ALLOWED])
def test_it_allows_public_addresses(text: str, why: str) -> None:
    assert not address_blocked(ipaddress.ip_address(text)), why


@pytest.mark.parametrize(
    ("text", "embedded"),
    [
        ("::ffff:10.0.0.1", ["10.0.0.1"]),
        ("2002:7f00:1::", ["127.0.0.1"]),
        ("2001:0:4136:e378:8000:63bf:3fff:fdd2", ["65.54.227.120", "192.0.2.45"]),
        ("64:ff9b::808:808", ["8.8.8.8"]),
        ("::7f00:1", ["127.0.0.1"]),
        ("::1", []),
        ("2606:4700:4700::1111", []),
    ],
)
def test_it_finds_the_ipv4_address_an_ipv6_address_carries(text: str, embedded: list[str]) -> None:
    assert [str(a) for a in embedded_ipv4(ipaddress.IPv6Address(text))] == embedded
