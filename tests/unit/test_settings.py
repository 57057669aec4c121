from pathlib import Path

import pytest

from routing_engine.settings import DEFAULT_CONFIG, SettingsError, load_settings


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "warp.yaml"
    path.write_text(text)
    return path


def test_project_settings_file_is_valid_and_embedded_by_default(tmp_path: Path) -> None:
    s = load_settings(DEFAULT_CONFIG, environ={"WARP_STACK__DATA_DIR": str(tmp_path)})  # no secrets yet
    assert s.sip.listen == ("udp:127.0.0.1:5060", "tcp:127.0.0.1:5060")
    assert s.embedded_postgres and s.embedded_redis
    assert s.database_url == "postgresql://warp@127.0.0.1:55432/warp"
    assert s.redis_url == "redis://127.0.0.1:56379/0"


def test_embedded_urls_carry_the_passwords_the_stack_generated(tmp_path: Path) -> None:
    s = load_settings(DEFAULT_CONFIG, environ={"WARP_STACK__DATA_DIR": str(tmp_path)})
    (tmp_path / "secrets").mkdir()
    (tmp_path / "secrets" / "postgres.password").write_text("pg-Secret_1\n")
    (tmp_path / "secrets" / "redis.password").write_text("rd-Secret_2\n")
    assert s.database_url == "postgresql://warp:pg-Secret_1@127.0.0.1:55432/warp"
    assert s.embedded_database_url("postgres") == "postgresql://warp:pg-Secret_1@127.0.0.1:55432/postgres"
    assert s.redis_url == "redis://:rd-Secret_2@127.0.0.1:56379/0"


def test_an_external_url_takes_its_password_from_a_file(tmp_path: Path) -> None:
    (tmp_path / "pg").write_text("p@ss/word\n")
    (tmp_path / "rd").write_text("r:pw\n")
    s = load_settings(write(tmp_path, "{}"), environ={
        "DATABASE_URL": "postgresql://warp@postgres:5432/warp", "WARP_DATABASE__PASSWORD_FILE": str(tmp_path / "pg"),
        "REDIS_URL": "redis://redis:6379/0", "WARP_REDIS__PASSWORD_FILE": str(tmp_path / "rd")})
    assert s.database_url == "postgresql://warp:p%40ss%2Fword@postgres:5432/warp"
    assert s.redis_url == "redis://:r%3Apw@redis:6379/0"
    import redis

    pool = redis.ConnectionPool.from_url(s.redis_url)
    assert pool.connection_kwargs["password"] == "r:pw"
    missing = load_settings(write(tmp_path, "{}"), environ={
        "REDIS_URL": "redis://redis:6379/0", "WARP_REDIS__PASSWORD_FILE": str(tmp_path / "none")})
    with pytest.raises(SettingsError, match="password file not found"):
        missing.redis_url  # noqa: B018


def test_environment_overrides_any_key_with_type_conversion(tmp_path: Path) -> None:
    s = load_settings(write(tmp_path, "sip:\n  children: 4\n"), environ={
        "WARP_SIP__CHILDREN": "8",
        "WARP_SIP__LISTEN": "udp:127.0.0.9:5070, tcp:127.0.0.9:5070",
        "WARP_CDR__BATCH_SECONDS": "0.5",
    })
    assert s.sip.children == 8
    assert s.sip.listen == ("udp:127.0.0.9:5070", "tcp:127.0.0.9:5070")
    assert s.cdr.batch_seconds == 0.5


def test_database_and_redis_urls_switch_off_the_embedded_servers(tmp_path: Path) -> None:
    s = load_settings(write(tmp_path, "{}"), environ={
        "DATABASE_URL": "postgresql://u@db.example:5432/w", "REDIS_URL": "redis://cache:6379/2"})
    assert not s.embedded_postgres and not s.embedded_redis
    assert s.database_url == "postgresql://u@db.example:5432/w"
    assert s.redis_url == "redis://cache:6379/2"


@pytest.mark.parametrize(
    "text, env, message",
    [
        ("sip:\n  childs: 4\n", {}, "sip.childs: unknown key"),
        ("sipp:\n  children: 4\n", {}, "sipp: unknown settings section"),
        ("sip:\n  children: many\n", {}, "sip.children: expected an integer"),
        ("sip:\n  children: 0\n", {}, "sip.children: must be greater than zero"),
        ("{}", {"WARP_SIP__CHILDREN": "x"}, "sip.children: expected an integer"),
        ("sip:\n  listen: [udp-127.0.0.1]\n", {}, "sip.listen[0]"),
        ("{}", {"DATABASE_URL": "mysql://x"}, "database.url"),
        ("stack:\n  redis_port: 70000\n", {}, "stack.redis_port"),
        ("{}", {"WARP_REDIS__PASSWORD_FILE": "/run/secrets/x"}, "redis.password_file: only with redis.url"),
        ("routing:\n  default_region: usa\n", {}, "routing.default_region"),
        ("- a\n- b\n", {}, "top level must be a mapping"),
        ("{}", {"WARP_METRICS__LISTEN": "9464"}, "metrics.listen: expected address:port"),
        ("{}", {"WARP_METRICS__LISTEN": "127.0.0.1:99999"}, "metrics.listen"),
        ("cdr:\n  retention_days: 0\n", {}, "cdr.retention_days: must be greater than zero"),
        ("cdr:\n  bigquery_table: just-a-table\n", {}, "cdr.bigquery_table: expected project.dataset.table"),
    ],
)
def test_bad_settings_are_refused_naming_the_key(tmp_path: Path, text: str, env: dict[str, str],
                                                 message: str) -> None:
    with pytest.raises(SettingsError, match=message.replace("[", r"\[").replace("]", r"\]")):
        load_settings(write(tmp_path, text), environ=env)


def test_metrics_endpoint_can_be_switched_off_and_bigquery_is_off_by_default(tmp_path: Path) -> None:
    s = load_settings(DEFAULT_CONFIG, environ={"WARP_METRICS__LISTEN": ""})
    assert s.metrics.listen == "" and s.cdr.bigquery_table == "" and s.cdr.retention_days == 7
    assert load_settings(DEFAULT_CONFIG, environ={}).metrics.listen == "127.0.0.1:9464"


def test_missing_settings_file_is_reported_with_its_path(tmp_path: Path) -> None:
    with pytest.raises(SettingsError, match="not found"):
        load_settings(tmp_path / "nope.yaml", environ={})


@pytest.mark.parametrize("key, value, message", [
    ("WARP_MEDIA__NG_ADDRESS", "localhost", "media.ng_address: expected address:port"),
    ("WARP_MEDIA__PORT_MIN", "50000", "media.port_min/port_max"),
    ("WARP_MEDIA__TIMEOUT_MS", "0", "media.timeout_ms: must be greater than zero"),
    ("WARP_MEDIA__RETRIES", "-1", "media.retries: must not be negative"),
])
def test_bad_media_settings_are_named(key: str, value: str, message: str) -> None:
    with pytest.raises(SettingsError, match=message.replace(".", r"\.")):
        load_settings(environ={key: value})


def test_media_settings_reach_kamailio_only_when_media_is_enabled(tmp_path: Path) -> None:
    from routing_engine.ops import stack

    on = stack.kamailio_command(load_settings(environ={"WARP_MEDIA__NG_ADDRESS": "127.0.0.9:2223"}), tmp_path)
    off = stack.kamailio_command(load_settings(environ={"WARP_MEDIA__ENABLED": "false"}), tmp_path)
    assert 'WARP_RTPENGINE_SOCK="udp:127.0.0.9:2223"' in on
    assert not any("RTPENGINE" in part for part in off)


def test_topology_masking_reaches_kamailio_with_its_key_in_the_environment_only(tmp_path: Path) -> None:
    from routing_engine.ops import stack

    key = "mask-key-0123456789abcdef"
    masked = load_settings(environ={"WARP_SIP__TOPOLOGY_HIDING": "topoh", "WARP_SIP__TOPOH_KEY": key,
                                    "WARP_SIP__LISTEN": "udp:192.0.2.7:5060,tcp:192.0.2.7:5060"})
    command = stack.kamailio_command(masked, tmp_path)
    assert "WARP_TOPOH=1" in command and 'WARP_TOPOH_IP="192.0.2.7"' in command
    assert not any(key in part for part in command)
    assert stack.kamailio_env(masked, {})["WARP_TOPOH_KEY"] == key
    default = load_settings(environ={})
    assert not any("TOPOH" in part for part in stack.kamailio_command(default, tmp_path))
    assert "WARP_TOPOH_KEY" not in stack.kamailio_env(default, {"WARP_TOPOH_KEY": key})


@pytest.mark.parametrize("env, message", [
    ({"WARP_SIP__TOPOLOGY_HIDING": "off"}, "sip.topology_hiding: topos or topoh"),
    ({"WARP_SIP__TOPOLOGY_HIDING": "topoh"}, "sip.topoh_key: topoh needs a key"),
])
def test_bad_topology_hiding_settings_are_named(env: dict[str, str], message: str) -> None:
    with pytest.raises(SettingsError, match=message.replace(".", r"\.")):
        load_settings(environ=env)


def test_the_redis_client_parses_replies_with_hiredis() -> None:
    from redis._parsers import _HiredisParser
    from redis.connection import DefaultParser

    assert DefaultParser is _HiredisParser
