"""Which dispatchers a worker links to (worker/discovery.py): the pure rule and its loop.

The resolver is injected, so addresses come and go at the test's command; the real links to
real dispatchers found this way are in tests/worker/test_multi_dispatcher.py.
"""

from __future__ import annotations

from collections.abc import Sequence

import pytest

from worker.config import Config
from worker.discovery import DispatcherDiscovery, dispatcher_links, resolve_all, with_address

URL = "ws://dispatchers.ns.svc:8080/worker-listen"


def test_each_address_of_a_name_gets_a_link_with_the_scheme_port_and_path_kept() -> None:
    """One link per address; IPv6 in brackets; addresses as written stay; sorted, no
    duplicates, so the same answer in another order is the same set of links."""
    links = dispatcher_links(
        [URL, "ws://10.0.0.9:8080/worker-listen", "wss://other:443/w?x=1"],
        {"dispatchers.ns.svc": ["10.0.0.2", "10.0.0.1", "fd00::5", "10.0.0.1"]},
    )
    assert links == [
        "ws://10.0.0.1:8080/worker-listen",
        "ws://10.0.0.2:8080/worker-listen",
        "ws://10.0.0.9:8080/worker-listen",
        "ws://[fd00::5]:8080/worker-listen",
        "wss://other:443/w?x=1",  # not resolved: kept as written
    ]
    assert with_address("ws://h/worker-listen", "1.2.3.4") == "ws://1.2.3.4/worker-listen"


class FakeResolver:
    """Answers from a table the test edits; a missing name fails like the system resolver."""

    def __init__(self, table: dict[str, list[str]]) -> None:
        self.table = table
        self.asked: list[str] = []

    async def __call__(self, host: str) -> Sequence[str]:
        self.asked.append(host)
        if host not in self.table:
            raise OSError(f"cannot resolve {host}")
        return self.table[host]


async def test_links_follow_the_addresses_and_survive_a_failed_resolution() -> None:
    """New addresses are added, vanished ones removed; a failed or empty answer keeps the last
    links (a DNS hiccup must not cut the worker off)."""
    resolver = FakeResolver({"dispatchers.ns.svc": ["10.0.0.1"]})
    changes: list[tuple[list[str], list[str]]] = []
    discovery = DispatcherDiscovery(
        [URL], lambda added, removed: changes.append((added, removed)), resolver=resolver
    )
    await discovery.refresh()
    assert changes == [(["ws://10.0.0.1:8080/worker-listen"], [])]
    resolver.table["dispatchers.ns.svc"] = ["10.0.0.1", "10.0.0.2"]
    await discovery.refresh()
    assert changes[-1] == (["ws://10.0.0.2:8080/worker-listen"], [])
    resolver.table["dispatchers.ns.svc"] = ["10.0.0.2"]
    await discovery.refresh()
    assert changes[-1] == ([], ["ws://10.0.0.1:8080/worker-listen"])
    for answer in ({}, {"dispatchers.ns.svc": []}):  # fails, then resolves to nothing
        resolver.table = answer
        await discovery.refresh()
    assert len(changes) == 3 and discovery.links == ["ws://10.0.0.2:8080/worker-listen"]
    assert resolver.asked == ["dispatchers.ns.svc"] * 5


async def test_a_name_never_resolved_gets_no_link_until_it_resolves() -> None:
    """Linking to the name itself as well as to its addresses would reach one dispatcher twice;
    until the name resolves, it has no link."""
    resolver = FakeResolver({})
    changes: list[tuple[list[str], list[str]]] = []
    discovery = DispatcherDiscovery(
        [URL], lambda added, removed: changes.append((added, removed)), resolver=resolver
    )
    await discovery.refresh()
    assert changes == [] and discovery.links == [] and discovery.resolved.is_set()


async def test_the_system_resolver_finds_localhost() -> None:
    """The default resolver returns every address of a name (here the loopback)."""
    assert "127.0.0.1" in await resolve_all("localhost")


def test_config_takes_one_url_several_or_a_comma_separated_variable() -> None:
    """The single-URL form keeps working; the flag repeats; the variable splits on commas;
    duplicates are dropped; dns discovery and its interval are checked."""
    from worker.config import parse_config

    assert Config(dispatcher_url="ws://a/w").dispatcher_url == ("ws://a/w",)  # type: ignore[arg-type]
    flags = ["--dispatcher-url", "ws://a/w", "--dispatcher-url", "ws://b/w", "--engine=simulated"]
    assert parse_config(flags, {}).dispatcher_url == ("ws://a/w", "ws://b/w")
    env = {"WORKER_DISPATCHER_URL": "ws://a/w, ws://b/w,ws://a/w", "WORKER_ENGINE": "simulated"}
    config = parse_config([], env | {"WORKER_DISPATCHER_DISCOVERY": "dns"})
    assert config.dispatcher_url == ("ws://a/w", "ws://b/w")
    assert (config.dispatcher_discovery, config.discovery_interval_s) == ("dns", 10.0)
    with pytest.raises(ValueError, match="discovery_interval_s"):
        Config(discovery_interval_s=0)
