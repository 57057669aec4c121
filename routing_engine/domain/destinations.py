"""Where the node may never send SIP: its own services, whatever a request or a row says.

A Request-URI, a Route, a Contact that becomes an in-dialog target, a trunk's inbound URI or a
vendor gateway row can all name an address; this module says whether that address is one of
the node's own services (Redis, Postgres, rtpengine's ng control, the admin API, the metrics
endpoint, the node's own SIP sockets) or a place no SIP peer lives (unspecified, multicast,
broadcast, link-local — the cloud metadata service is 169.254.169.254), plus the networks ops
add in ``sip.forbidden_destinations``. The SIP worker checks every relay against it just
before sending (Kamailio's KEMI onsend route cannot drop a message in 5.6), the admin API
checks inbound URIs and gateway addresses when they are written.

A service bound to a wildcard address (0.0.0.0, ::) answers on every local address: any
loopback address or SIP listen address with that port is then refused.

Pure: the caller resolves names (``refusal`` takes IP addresses only).
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable
from dataclasses import dataclass
from urllib.parse import urlsplit

from routing_engine.settings import Settings

IpAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IpNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

_NO_PEER = [ipaddress.ip_network(n) for n in ("0.0.0.0/8", "169.254.0.0/16", "224.0.0.0/4", "240.0.0.0/4",
                                                "::/128", "fe80::/10", "ff00::/8")]


@dataclass(frozen=True, slots=True)
class Service:
    name: str
    address: IpAddress
    port: int | None  # None: every port of that address


@dataclass(frozen=True, slots=True)
class Guard:
    services: tuple[Service, ...]
    local: frozenset[IpAddress]            # the node's own SIP addresses
    forbidden: tuple[tuple[IpNetwork, int | None], ...] = ()

    def refusal(self, ip: str, port: int) -> str | None:
        """Why SIP may not go to ``ip``:``port`` (None: it may)."""
        address = parse_ip(ip)
        if address is None:
            return f"not an IP address: {ip[:60]!r}"
        if any(address in net for net in _NO_PEER) or address == ipaddress.IPv4Address("255.255.255.255"):
            return f"{address} is no SIP peer's address"
        for service in self.services:
            if service.port is not None and service.port != port:
                continue
            if service.address == address or (service.address.is_unspecified and self._is_local(address)):
                return f"{address}:{port} is this node's {service.name}"
        for net, net_port in self.forbidden:
            if address.version == net.version and address in net and net_port in (None, port):
                return f"{address}:{port} is in sip.forbidden_destinations"
        return None

    def _is_local(self, address: IpAddress) -> bool:
        return address.is_loopback or address in self.local


def parse_ip(text: str) -> IpAddress | None:
    try:
        address = ipaddress.ip_address(text.strip().strip("[]"))
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


def _hostport(text: str, default_port: int | None) -> tuple[IpAddress, int | None] | None:
    """'host:port', '[v6]:port', 'udp:host:port' or a URL, as an address and port."""
    text = text.strip()
    if not text or text.startswith(("unix:", "/")):
        return None
    if "://" in text:
        parts = urlsplit(text)
        host, port = parts.hostname or "", parts.port
    else:
        if text.split(":", 1)[0].lower() in ("udp", "tcp", "tls", "sctp", "ws", "wss"):
            text = text.split(":", 1)[1]
        if text.startswith("["):
            host, _, rest = text[1:].partition("]")
            port = int(rest[1:]) if rest.startswith(":") and rest[1:].isdigit() else None
        elif text.count(":") == 1:
            host, _, p = text.partition(":")
            port = int(p) if p.isdigit() else None
        else:
            host, port = text, None
    if host in ("localhost", ""):
        host = "127.0.0.1"
    address = parse_ip(host)
    return (address, port if port is not None else default_port) if address is not None else None


def uri_target(uri: str) -> tuple[str, int]:
    """The host and port a SIP URI sends to ('sip:user@host:port;params'): the port its scheme
    and transport imply when none is written."""
    scheme, _, rest = uri.strip().strip("<>").partition(":")
    # the user part may carry ';' itself (sip:1234;rn=305;npdi@host): the host follows its '@'
    user, at, hostpart = rest.partition("@")
    hostpart = hostpart if at else user
    hostport, _, params = hostpart.split("?", 1)[0].partition(";")
    secure = scheme.lower() == "sips" or "transport=tls" in params.lower()
    if hostport.startswith("["):
        host, _, tail = hostport[1:].partition("]")
        port_text = tail[1:] if tail.startswith(":") else ""
    else:
        host, _, port_text = hostport.partition(":")
    port = int(port_text) if port_text.isdigit() and 0 < int(port_text) < 65536 else (5061 if secure else 5060)
    return host, port


def from_settings(settings: Settings) -> Guard:
    return guard_for(redis_url=settings.redis_url, database_url=settings.database_url,
                     sip_listen=settings.sip.listen, ng_address=settings.media.ng_address,
                     api_listen=settings.api.listen, metrics_listen=settings.metrics.listen,
                     forbidden=settings.sip.forbidden_destinations)


def guard_for(*, redis_url: str, database_url: str, sip_listen: Iterable[str], sip_port: int = 5060,
              ng_address: str = "", api_listen: str = "", metrics_listen: str = "",
              forbidden: Iterable[str] = ()) -> Guard:
    """The guard of a node with these addresses (settings values, as written)."""
    services: list[Service] = []
    named = [("Redis", redis_url, 6379), ("Postgres", database_url, 5432), ("rtpengine ng control", ng_address, None),
             ("admin API", api_listen, None), ("metrics endpoint", metrics_listen, None)]
    for name, text, default in named:
        found = _hostport(text, default) if text else None
        if found is not None and found[1] is not None:
            services.append(Service(name, found[0], found[1]))
    local: set[IpAddress] = set()
    for text in sip_listen:
        found = _hostport(text, sip_port)
        if found is not None:
            local.add(found[0])
            services.append(Service("SIP socket", found[0], found[1]))
    nets: list[tuple[IpNetwork, int | None]] = []
    for text in forbidden:
        net_text, _, port_text = text.strip().rpartition(":") if text.count(":") == 1 else (text.strip(), "", "")
        nets.append((ipaddress.ip_network(net_text or text.strip(), strict=False),
                     int(port_text) if port_text else None))
    return Guard(tuple(services), frozenset(local), tuple(nets))
