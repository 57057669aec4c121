"""Settings: one YAML file, environment overrides, validated once at start-up.

Every process (Kamailio's Python, the CLI, the CDR emitter, the tests) reads the same file the
same way. Overrides come from an injectable environment mapping, so tests pass a dict:

    WARP_CONFIG=/path/warp.yaml        the file (default: config/warp.yaml in the project)
    WARP_<SECTION>__<KEY>=value        any key, e.g. WARP_SIP__CHILDREN=8
    DATABASE_URL, REDIS_URL            external servers instead of the embedded stack

A bad value is reported with its dotted key, e.g. ``sip.children: expected an integer``.
"""

from __future__ import annotations

import dataclasses
import os
import socket
import types
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

PROJECT_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_CONFIG = PROJECT_ROOT / "config" / "warp.yaml"


class SettingsError(ValueError):
    """A settings file or override that cannot be used; the message names the key."""


@dataclass(frozen=True)
class NodeSettings:
    name: str = field(default_factory=socket.gethostname)


@dataclass(frozen=True)
class SipSettings:
    listen: tuple[str, ...] = ("udp:127.0.0.1:5060", "tcp:127.0.0.1:5060")
    children: int = 4
    tcp_children: int = 2
    server_header: str = "WARP"
    # Final response timeout per attempt while no provisional reply came (ms).
    fr_timeout_ms: int = 5000
    # Final response timeout after a provisional reply (ms): how long a call may ring.
    fr_inv_timeout_ms: int = 120000
    # Dialog lifetime when nothing shorter applies (s); the rating issue shortens it per call.
    max_call_duration_s: int = 14400
    # Networks ('10.0.0.0/8', '192.0.2.7/32:6379') SIP is never sent to, beside the node's own
    # services, which are always refused (routing_engine/destinations.py).
    forbidden_destinations: tuple[str, ...] = ()
    # Flood limits per source IP and node, over every request kind (requests per second; past
    # them requests are dropped unanswered). Peers are customer ACL addresses, vendor gateways
    # and addresses that proved a digest credential on this node.
    flood_rps: int = 20
    flood_peer_rps: int = 2000
    # TCP: a connection lives this long without traffic, unless a peer uses it (then the peer
    # lifetime applies); at most this many connections in all.
    tcp_lifetime_s: int = 30
    tcp_peer_lifetime_s: int = 3605
    tcp_max_connections: int = 4096
    # New calls per second of a trunk whose own cps_limit is not set (0: no limit), so that no
    # address a trunk's ACL names can set up calls without bound.
    default_trunk_cps: int = 100


@dataclass(frozen=True)
class StackSettings:
    data_dir: str = ".data"
    postgres_port: int = 55432
    redis_port: int = 56379


@dataclass(frozen=True)
class DatabaseSettings:
    url: str | None = None  # None: the embedded cluster (stack.postgres_port, name below)
    name: str = "warp"
    connect_timeout_s: int = 5


@dataclass(frozen=True)
class RedisSettings:
    url: str | None = None  # None: the embedded server (stack.redis_port, db below)
    db: int = 0
    socket_timeout_ms: int = 200


@dataclass(frozen=True)
class KamailioSettings:
    binary: str = "/usr/sbin/kamailio"
    shm_mb: int = 128
    pkg_mb: int = 16
    log_level: int = 2  # Kamailio debug= value: 2 info, 3 debug


@dataclass(frozen=True)
class RoutingSettings:
    default_region: str = "US"  # region for dialed numbers written without a country code


@dataclass(frozen=True)
class AuthSettings:
    realm: str = "warp.local"
    # Nonce secret shared by every node (so a nonce from one node verifies on another);
    # empty: each Kamailio makes its own at start.
    nonce_secret: str = ""
    nonce_expire_s: int = 30        # a challenge's nonce is good this long, once (one_time_nonce)
    block_refresh_ms: int = 1000    # how often a SIP worker re-reads the shared block list
    failures_before_block: int = 5  # digest failures from one source IP within the window...
    failure_window_s: int = 60
    block_s: int = 600              # ...block it (all nodes) for this long
    register_min_expires: int = 60
    register_max_expires: int = 3600
    register_default_expires: int = 3600


@dataclass(frozen=True)
class ApiSettings:
    listen: str = "127.0.0.1:8080"
    jwt_secret: str = ""        # HS256 shared secret; or
    jwks_url: str = ""          # a JWKS URL for RS256/ES256 tokens
    issuer: str = "warp"
    audience: str = "warp-admin"
    max_body_bytes: int = 100_000_000


@dataclass(frozen=True)
class HealthSettings:
    probe_interval_ms: int = 1000
    probe_timeout_ms: int = 500
    down_after: int = 2          # unanswered probes in a row before a gateway leaves service
    probe_source: str = "0.0.0.0"


@dataclass(frozen=True)
class QualitySettings:
    window_s: int = 900          # sliding window of call outcomes per vendor
    min_samples: int = 20        # fewer attempts than this in the window: not judged
    asr_min: float = 0.2         # below this ASR a vendor is demoted by the quality strategy...
    hysteresis: float = 0.05     # ...and restored only above asr_min + hysteresis
    refresh_s: float = 5.0       # how often a worker re-reads the window
    prefix_digits: int = 4       # also judged per destination prefix of this many digits (0: off)
    pdd_max_ms: int = 0          # average PDD above this demotes too (0: PDD not judged)


@dataclass(frozen=True)
class SnapshotSettings:
    check_interval_ms: int = 100  # how often a SIP worker looks for a newly published snapshot
    keep: int = 5                 # published versions kept on disk (for rollback)
    rebuild_every_s: int = 60     # rebuild even without a notification (a missed one heals)


@dataclass(frozen=True)
class LrnSettings:
    source: str = "local"  # local (routing.lnp in Postgres) | http | none
    http_url: str = ""
    timeout_ms: int = 300
    cache_ttl_s: int = 3600


@dataclass(frozen=True)
class CdrSettings:
    stream: str = "warp:cdr"
    group: str = "cdr-emitter"
    batch_size: int = 500
    batch_seconds: float = 10.0
    stream_maxlen: int = 1_000_000
    retention_days: int = 7       # daily partitions of cdr.cdrs older than this are dropped
    # BigQuery sink (pip install '.[bigquery]'): off while bigquery_table is empty
    bigquery_table: str = ""      # project.dataset.table
    bigquery_group: str = "cdr-bigquery"  # its own consumer group on the same stream


@dataclass(frozen=True)
class MetricsSettings:
    # The one Prometheus endpoint, served by the companion; empty: no endpoint.
    listen: str = "127.0.0.1:9464"
    # Kamailio's control socket for its own statistics; empty: <data_dir>/run/<node>/kamailio_ctl
    kamailio_ctl: str = ""
    kamcmd: str = "/usr/sbin/kamcmd"


@dataclass(frozen=True)
class MediaSettings:
    enabled: bool = True                 # false: no media relay; every call keeps end-to-end media
    managed: bool = True                 # `warp run/start` start (and stop) their own rtpengine
    binary: str = "/usr/bin/rtpengine"
    ng_address: str = "127.0.0.1:22222"  # rtpengine's ng control socket (UDP) Kamailio talks to
    interface: str = "127.0.0.1"         # the address rtpengine relays media on (a managed rtpengine)
    port_min: int = 30000                # its RTP/RTCP port range
    port_max: int = 30999
    timeout_ms: int = 500                # longest wait for one rtpengine answer ...
    retries: int = 1                     # ... and how many times it is asked again
    disable_s: int = 10                  # after a failure, new calls skip rtpengine for this long


@dataclass(frozen=True)
class Settings:
    node: NodeSettings = field(default_factory=NodeSettings)
    sip: SipSettings = field(default_factory=SipSettings)
    stack: StackSettings = field(default_factory=StackSettings)
    database: DatabaseSettings = field(default_factory=DatabaseSettings)
    redis: RedisSettings = field(default_factory=RedisSettings)
    kamailio: KamailioSettings = field(default_factory=KamailioSettings)
    routing: RoutingSettings = field(default_factory=RoutingSettings)
    lrn: LrnSettings = field(default_factory=LrnSettings)
    auth: AuthSettings = field(default_factory=AuthSettings)
    api: ApiSettings = field(default_factory=ApiSettings)
    health: HealthSettings = field(default_factory=HealthSettings)
    snapshot: SnapshotSettings = field(default_factory=SnapshotSettings)
    quality: QualitySettings = field(default_factory=QualitySettings)
    cdr: CdrSettings = field(default_factory=CdrSettings)
    media: MediaSettings = field(default_factory=MediaSettings)
    metrics: MetricsSettings = field(default_factory=MetricsSettings)
    config_path: str = ""

    @property
    def data_dir(self) -> Path:
        path = Path(self.stack.data_dir)
        return path if path.is_absolute() else PROJECT_ROOT / path

    @property
    def embedded_postgres(self) -> bool:
        return self.database.url is None

    @property
    def embedded_redis(self) -> bool:
        return self.redis.url is None

    @property
    def database_url(self) -> str:
        if self.database.url is not None:
            return self.database.url
        return f"postgresql://warp@127.0.0.1:{self.stack.postgres_port}/{self.database.name}"

    @property
    def redis_url(self) -> str:
        if self.redis.url is not None:
            return self.redis.url
        return f"redis://127.0.0.1:{self.stack.redis_port}/{self.redis.db}"


def load_settings(
    path: str | os.PathLike[str] | None = None, environ: Mapping[str, str] | None = None
) -> Settings:
    """Read the YAML file, apply environment overrides, validate, return frozen settings."""
    env = os.environ if environ is None else environ
    config_path = Path(path or env.get("WARP_CONFIG") or DEFAULT_CONFIG)
    try:
        raw = yaml.safe_load(config_path.read_text()) or {}
    except FileNotFoundError as exc:
        raise SettingsError(f"settings file not found: {config_path}") from exc
    except yaml.YAMLError as exc:
        raise SettingsError(f"{config_path}: not valid YAML: {exc}") from exc
    if not isinstance(raw, dict):
        raise SettingsError(f"{config_path}: the top level must be a mapping of sections")

    overrides: dict[str, dict[str, Any]] = {}
    for name, value in env.items():
        if name.startswith("WARP_") and "__" in name:
            section, _, key = name[len("WARP_") :].partition("__")
            overrides.setdefault(section.lower(), {})[key.lower()] = value
    if env.get("DATABASE_URL"):
        overrides.setdefault("database", {})["url"] = env["DATABASE_URL"]
    if env.get("REDIS_URL"):
        overrides.setdefault("redis", {})["url"] = env["REDIS_URL"]

    sections: dict[str, Any] = {}
    section_types = {f.name: f.type for f in dataclasses.fields(Settings) if f.name != "config_path"}
    hints = typing.get_type_hints(Settings)
    for name in set(raw) | set(overrides):
        if name not in section_types:
            known = ", ".join(sorted(section_types))
            raise SettingsError(f"{name}: unknown settings section (known: {known})")
    for name in section_types:
        from_file = raw.get(name) or {}
        if not isinstance(from_file, dict):
            raise SettingsError(f"{name}: expected a mapping of keys")
        values = {**from_file, **overrides.get(name, {})}
        sections[name] = _build_section(name, hints[name], values, from_env=overrides.get(name, {}))
    settings = Settings(**sections, config_path=str(config_path))
    _check(settings)
    return settings


def _build_section(
    section: str, cls: type[Any], values: Mapping[str, Any], from_env: Mapping[str, Any]
) -> Any:
    hints = typing.get_type_hints(cls)
    kwargs: dict[str, Any] = {}
    for key, value in values.items():
        if key not in hints:
            known = ", ".join(sorted(hints))
            raise SettingsError(f"{section}.{key}: unknown key (known: {known})")
        kwargs[key] = _coerce(f"{section}.{key}", hints[key], value, key in from_env)
    return cls(**kwargs)


def _coerce(key: str, hint: Any, value: Any, from_env: bool) -> Any:
    origin = typing.get_origin(hint)
    args = typing.get_args(hint)
    if origin in (types.UnionType, typing.Union) and type(None) in args:
        if value is None or (from_env and value == ""):
            return None
        (inner,) = [a for a in args if a is not type(None)]
        return _coerce(key, inner, value, from_env)
    if hint is bool:
        if isinstance(value, bool):
            return value
        if from_env and str(value).lower() in ("1", "true", "yes", "on", "0", "false", "no", "off"):
            return str(value).lower() in ("1", "true", "yes", "on")
        raise SettingsError(f"{key}: expected true or false, got {value!r}")
    if hint is int:
        if isinstance(value, bool):
            raise SettingsError(f"{key}: expected an integer, got {value!r}")
        if isinstance(value, int) or (from_env and str(value).strip().lstrip("-").isdigit()):
            return int(value)
        raise SettingsError(f"{key}: expected an integer, got {value!r}")
    if hint is float:
        try:
            if isinstance(value, bool):
                raise ValueError
            return float(value)
        except (TypeError, ValueError):
            raise SettingsError(f"{key}: expected a number, got {value!r}") from None
    if hint is str:
        if isinstance(value, str | int | float) and not isinstance(value, bool):
            return str(value)
        raise SettingsError(f"{key}: expected a string, got {value!r}")
    if origin is tuple:
        items = [s.strip() for s in value.split(",") if s.strip()] if from_env else value
        if not isinstance(items, list | tuple):
            raise SettingsError(f"{key}: expected a list, got {value!r}")
        return tuple(_coerce(f"{key}[{i}]", args[0], item, from_env) for i, item in enumerate(items))
    raise SettingsError(f"{key}: unsupported setting type {hint!r}")  # pragma: no cover


def _check(settings: Settings) -> None:
    positive = {
        "sip.children": settings.sip.children,
        "sip.tcp_children": settings.sip.tcp_children,
        "sip.fr_timeout_ms": settings.sip.fr_timeout_ms,
        "sip.fr_inv_timeout_ms": settings.sip.fr_inv_timeout_ms,
        "sip.max_call_duration_s": settings.sip.max_call_duration_s,
        "kamailio.shm_mb": settings.kamailio.shm_mb,
        "kamailio.pkg_mb": settings.kamailio.pkg_mb,
        "cdr.batch_size": settings.cdr.batch_size,
        "database.connect_timeout_s": settings.database.connect_timeout_s,
        "redis.socket_timeout_ms": settings.redis.socket_timeout_ms,
        "lrn.timeout_ms": settings.lrn.timeout_ms,
        "health.probe_interval_ms": settings.health.probe_interval_ms,
        "health.probe_timeout_ms": settings.health.probe_timeout_ms,
        "health.down_after": settings.health.down_after,
        "quality.window_s": settings.quality.window_s,
        "quality.min_samples": settings.quality.min_samples,
        "snapshot.check_interval_ms": settings.snapshot.check_interval_ms,
        "snapshot.keep": settings.snapshot.keep,
        "snapshot.rebuild_every_s": settings.snapshot.rebuild_every_s,
        "auth.failures_before_block": settings.auth.failures_before_block,
        "auth.failure_window_s": settings.auth.failure_window_s,
        "auth.block_s": settings.auth.block_s,
        "auth.register_min_expires": settings.auth.register_min_expires,
        "auth.register_max_expires": settings.auth.register_max_expires,
        "auth.register_default_expires": settings.auth.register_default_expires,
        "lrn.cache_ttl_s": settings.lrn.cache_ttl_s,
        "media.timeout_ms": settings.media.timeout_ms,
        "media.disable_s": settings.media.disable_s,
        "cdr.retention_days": settings.cdr.retention_days,
    }
    for key, value in positive.items():
        if value <= 0:
            raise SettingsError(f"{key}: must be greater than zero, got {value}")
    for key, port in (("stack.postgres_port", settings.stack.postgres_port),
                      ("stack.redis_port", settings.stack.redis_port)):
        if not 1 <= port <= 65535:
            raise SettingsError(f"{key}: not a port number: {port}")
    _check_media(settings.media)
    if settings.cdr.batch_seconds <= 0:
        raise SettingsError(f"cdr.batch_seconds: must be greater than zero, got {settings.cdr.batch_seconds}")
    if settings.metrics.listen:
        host, _, port_text = settings.metrics.listen.rpartition(":")
        if not host or not port_text.isdigit() or not 1 <= int(port_text) <= 65535:
            raise SettingsError(f"metrics.listen: expected address:port (e.g. 127.0.0.1:9464) or empty, "
                                f"got {settings.metrics.listen!r}")
    table = settings.cdr.bigquery_table
    if table and (len(table.split(".")) != 3 or not all(table.split("."))):
        raise SettingsError(f"cdr.bigquery_table: expected project.dataset.table, got {table!r}")
    if not settings.sip.listen:
        raise SettingsError("sip.listen: at least one listen address is needed")
    for i, sock in enumerate(settings.sip.listen):
        proto, _, hostport = sock.partition(":")
        host, _, port_text = hostport.rpartition(":")
        if proto not in ("udp", "tcp", "tls") or not host or not port_text.isdigit():
            raise SettingsError(
                f"sip.listen[{i}]: expected proto:address:port (e.g. udp:127.0.0.1:5060), got {sock!r}"
            )
    for key, url, schemes in (
        ("database.url", settings.database.url, ("postgresql://", "postgres://")),
        ("redis.url", settings.redis.url, ("redis://", "rediss://", "unix://")),
    ):
        if url is not None and not url.startswith(schemes):
            raise SettingsError(f"{key}: expected a URL starting with {' or '.join(schemes)}")
    a = settings.auth
    if not a.register_min_expires <= a.register_default_expires <= a.register_max_expires:
        raise SettingsError("auth.register_default_expires: must lie between register_min_expires and "
                            "register_max_expires")
    if not a.realm or any(c in a.realm for c in ' "'):
        raise SettingsError(f"auth.realm: expected a domain-like name, got {a.realm!r}")
    if settings.lrn.source not in ("local", "http", "none"):
        raise SettingsError(f"lrn.source: expected local, http or none, got {settings.lrn.source!r}")
    if settings.lrn.source == "http" and not settings.lrn.http_url.startswith(("http://", "https://")):
        raise SettingsError("lrn.http_url: an http(s) URL is needed when lrn.source is http")
    if len(settings.routing.default_region) != 2 or not settings.routing.default_region.isupper():
        raise SettingsError(
            f"routing.default_region: expected an ISO 3166 region code such as US, "
            f"got {settings.routing.default_region!r}"
        )


def _check_media(m: MediaSettings) -> None:
    host, _, port = m.ng_address.rpartition(":")
    if not host or not port.isdigit() or not 1 <= int(port) <= 65535:
        raise SettingsError(f"media.ng_address: expected address:port (e.g. 127.0.0.1:22222), got {m.ng_address!r}")
    if not 1024 <= m.port_min < m.port_max <= 65535:
        raise SettingsError(f"media.port_min/port_max: expected 1024 <= port_min < port_max <= 65535, "
                            f"got {m.port_min}-{m.port_max}")
    if m.retries < 0:
        raise SettingsError(f"media.retries: must not be negative, got {m.retries}")
