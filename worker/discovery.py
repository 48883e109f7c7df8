"""Which dispatchers a worker links to: the configured URLs, or every address behind them.

A worker connects to every dispatcher (docs/architecture.md §6.6). With `--dispatcher-discovery
static` the links are the configured URLs. With `dns` the host of each URL is resolved to all
its addresses (a Kubernetes headless Service names every dispatcher pod) and each address gets
a link of its own, the URL's scheme, port and path kept; the names are resolved again every
`--discovery-interval-s`, so new pods get a link and vanished ones lose theirs.

The rule is a pure function (`dispatcher_links`); `DispatcherDiscovery` is the small loop
around it, with the resolver injected so that tests can move addresses at will.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import socket
from collections.abc import Awaitable, Callable, Mapping, Sequence
from urllib.parse import urlsplit, urlunsplit

log = logging.getLogger(__name__)

#: Resolves a host name to its addresses (IPv4 or IPv6 text); raises OSError when it cannot.
Resolver = Callable[[str], Awaitable[Sequence[str]]]


def url_host(url: str) -> str:
    """The host part of a URL ("" when it has none)."""
    return urlsplit(url).hostname or ""


def with_address(url: str, address: str) -> str:
    """`url` with its host replaced by `address` (IPv6 in brackets), all else kept."""
    parts = urlsplit(url)
    host = f"[{address}]" if ":" in address else address
    netloc = host if parts.port is None else f"{host}:{parts.port}"
    if parts.username:  # never used by the protocol, but do not drop what was written
        auth = parts.username + (f":{parts.password}" if parts.password else "")
        netloc = f"{auth}@{netloc}"
    return urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))


def is_address(host: str) -> bool:
    """Whether `host` is already an IP address (nothing to resolve)."""
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


def dispatcher_links(urls: Sequence[str], addresses: Mapping[str, Sequence[str]]) -> list[str]:
    """The URL of every link: each of `urls` once per address its host resolves to.

    `addresses` maps a host name to its addresses; a URL whose host is an IP address, or a name
    missing from `addresses`, is kept as written. Sorted and without duplicates, so the same
    answer in another order changes nothing.
    """
    links: set[str] = set()
    for url in urls:
        host = url_host(url)
        resolved = addresses.get(host)
        if not host or is_address(host) or resolved is None:
            links.add(url)
            continue
        links.update(with_address(url, address) for address in resolved)
    return sorted(links)


async def resolve_all(host: str) -> list[str]:
    """Every address of `host` by the system resolver (what a headless Service returns)."""
    loop = asyncio.get_running_loop()
    infos = await loop.getaddrinfo(host, None, type=socket.SOCK_STREAM)
    return sorted({str(info[4][0]) for info in infos})


class DispatcherDiscovery:
    """Re-resolves the dispatchers' names and tells the worker which links to open and close.

    `on_change(added, removed)` gets link URLs. A name that fails to resolve keeps its last
    addresses: a DNS hiccup must not cut the worker off from dispatchers that are still up.
    A name that resolves to no address at all is treated the same way.
    """

    def __init__(
        self,
        urls: Sequence[str],
        on_change: Callable[[list[str], list[str]], None],
        interval_s: float = 10.0,
        resolver: Resolver = resolve_all,
    ) -> None:
        self.urls = list(urls)
        self.on_change = on_change
        self.interval_s = interval_s
        self.resolver = resolver
        self.links: list[str] = []
        self._addresses: dict[str, list[str]] = {}
        #: Set after each resolution round (tests wait on it instead of sleeping).
        self.resolved = asyncio.Event()

    async def refresh(self) -> None:
        """Resolve every name once and apply the difference."""
        hosts = {url_host(u) for u in self.urls}
        for host in sorted(h for h in hosts if h and not is_address(h)):
            try:
                found = list(await self.resolver(host))
            except OSError as exc:
                log.warning("cannot resolve dispatcher host %s: %s", host, exc)
                continue
            if found:
                self._addresses[host] = found
            else:
                log.warning("dispatcher host %s resolves to no address; links kept", host)
        links = dispatcher_links(
            [u for u in self.urls if url_host(u) in self._addresses or is_address(url_host(u))],
            self._addresses,
        )
        added = [u for u in links if u not in self.links]
        removed = [u for u in self.links if u not in links]
        self.links = links
        if added or removed:
            log.info("dispatchers: %d link(s); added %s, removed %s", len(links), added, removed)
            self.on_change(added, removed)
        self.resolved.set()

    async def run(self) -> None:
        """Resolve now, then every `interval_s`, until cancelled."""
        while True:
            await self.refresh()
            await asyncio.sleep(self.interval_s)
