"""docker-compose.yml and docker/Dockerfile: the container layout stays valid and wired up.

No Docker engine is needed: `docker-compose config` only validates and resolves the file.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
COMPOSE_FILE = ROOT / "docker-compose.yml"


def _compose_config() -> subprocess.CompletedProcess[str]:
    binary = shutil.which("docker-compose")
    if binary is None:
        pytest.skip("docker-compose is not installed (scripts/bootstrap.sh installs it)")
    return subprocess.run(
        [binary, "-f", str(COMPOSE_FILE), "config"],
        capture_output=True, text=True, cwd=ROOT, timeout=60,
    )


@pytest.fixture(scope="module")
def config() -> dict[str, Any]:
    result = _compose_config()
    assert result.returncode == 0, result.stderr
    parsed = yaml.safe_load(result.stdout)
    assert isinstance(parsed, dict)
    return parsed


def _environment(service: dict[str, Any]) -> dict[str, str]:
    env = service.get("environment") or {}
    if isinstance(env, list):
        return dict(item.split("=", 1) for item in env)
    return {key: str(value) for key, value in env.items()}


def _published(service: dict[str, Any]) -> set[tuple[int, int, str]]:
    """(published, target, protocol) of every published port, short or long syntax."""
    ports = set()
    for port in service.get("ports") or []:
        if isinstance(port, dict):
            ports.add((int(port["published"]), int(port["target"]), port.get("protocol", "tcp")))
        else:
            mapping, _, protocol = str(port).partition("/")
            published, _, target = mapping.rpartition(":")
            ports.add((int(published.rpartition(":")[2]), int(target), protocol or "tcp"))
    return ports


def test_compose_file_is_valid_for_docker_compose() -> None:
    result = _compose_config()
    assert result.returncode == 0, result.stderr


def test_compose_defines_the_database_cache_migration_sip_node_and_cdr_emitter(
    config: dict[str, Any],
) -> None:
    assert {"postgres", "redis", "migrate", "kamailio", "cdr-emitter", "api", "rtpengine"} <= set(config["services"])


def test_kamailio_publishes_sip_on_5060_over_udp_and_tcp(config: dict[str, Any]) -> None:
    kamailio = config["services"]["kamailio"]
    assert (5060, 5060, "udp") in _published(kamailio)
    assert (5060, 5060, "tcp") in _published(kamailio)
    assert kamailio.get("network_mode") != "host"


@pytest.mark.parametrize("name", ["kamailio", "cdr-emitter", "api"])
def test_node_processes_use_the_postgres_and_redis_services(
    config: dict[str, Any], name: str
) -> None:
    services = config["services"]
    env = _environment(services[name])
    database = urlsplit(env["DATABASE_URL"])
    redis = urlsplit(env["REDIS_URL"])
    assert database.scheme in ("postgresql", "postgres")
    assert database.hostname == "postgres" and "postgres" in services
    assert redis.scheme == "redis"
    assert redis.hostname == "redis" and "redis" in services


def test_kamailio_and_cdr_emitter_share_the_node_name_and_spool_folder(
    config: dict[str, Any],
) -> None:
    services = config["services"]
    kamailio, emitter = services["kamailio"], services["cdr-emitter"]
    for key in ("WARP_NODE__NAME", "WARP_STACK__DATA_DIR"):
        assert _environment(kamailio)[key] == _environment(emitter)[key]
    data_dir = _environment(kamailio)["WARP_STACK__DATA_DIR"]
    for service in (kamailio, emitter):
        targets = [str(v).split(":")[1] if isinstance(v, str) else v["target"]
                   for v in service.get("volumes") or []]
        assert data_dir in targets


def test_node_processes_start_after_migrations_and_a_healthy_redis(config: dict[str, Any]) -> None:
    services = config["services"]
    assert services["migrate"]["depends_on"]["postgres"]["condition"] == "service_healthy"
    for name in ("kamailio", "cdr-emitter"):
        depends = services[name]["depends_on"]
        assert depends["migrate"]["condition"] == "service_completed_successfully"
        assert depends["redis"]["condition"] == "service_healthy"


def test_migrate_runs_migrations_and_demo_data_not_the_embedded_setup(
    config: dict[str, Any],
) -> None:
    command = " ".join(config["services"]["migrate"]["command"])
    assert "db migrate" in command and "db demo" in command
    assert "setup" not in command


def test_the_image_dockerfile_installs_kamailio_python_and_builds_the_venv_with_python311(
    config: dict[str, Any],
) -> None:
    for name in ("migrate", "kamailio", "cdr-emitter"):
        build = config["services"][name]["build"]
        dockerfile = Path(build["context"]) / build.get("dockerfile", "Dockerfile")
        assert dockerfile.resolve() == (ROOT / "docker" / "Dockerfile").resolve()
    text = (ROOT / "docker" / "Dockerfile").read_text()
    assert "kamailio-python3-modules" in text and "rtpengine-daemon" in text
    assert "/usr/bin/python3.11 -m venv /opt/warp/.venv" in text
    assert (ROOT / ".dockerignore").exists()


def test_rtpengine_runs_as_its_own_service_and_kamailio_talks_to_it(config: dict[str, Any]) -> None:
    services = config["services"]
    relay, kamailio = services["rtpengine"], services["kamailio"]
    assert "rtpengine" in " ".join(relay["command"])
    relay_env, kamailio_env = _environment(relay), _environment(kamailio)
    ng_port = relay_env["WARP_MEDIA__NG_ADDRESS"].rpartition(":")[2]
    assert kamailio_env["WARP_MEDIA__NG_ADDRESS"] == f"rtpengine:{ng_port}"
    assert kamailio_env["WARP_MEDIA__MANAGED"] == "false"  # Kamailio's container starts no rtpengine of its own
    assert kamailio["depends_on"]["rtpengine"]["condition"] == "service_started"
    published = _published(relay)
    media = range(int(relay_env["WARP_MEDIA__PORT_MIN"]), int(relay_env["WARP_MEDIA__PORT_MAX"]) + 1)
    assert all((port, port, "udp") in published for port in media)  # the whole media range, over UDP
    assert int(ng_port) not in {p for p, _, _ in published}  # the control port stays inside


def test_the_rtpengine_service_settings_are_valid(config: dict[str, Any]) -> None:
    from routing_engine.settings import load_settings

    env = _environment(config["services"]["rtpengine"])
    media = load_settings(environ={k: v for k, v in env.items() if k.startswith("WARP_MEDIA__")}).media
    assert media.interface == "eth0" and media.enabled


def test_prometheus_scrapes_the_companion_metrics_endpoint(config: dict[str, Any]) -> None:
    services = config["services"]
    prometheus = services["prometheus"]
    mounted = {str(v["source"]) if isinstance(v, dict) else str(v).split(":")[0]: v
               for v in prometheus.get("volumes") or []}
    config_file = next(Path(source) for source in mounted if source.endswith("prometheus.yml"))
    scrape = yaml.safe_load(config_file.read_text())
    targets = [t for job in scrape["scrape_configs"] for group in job["static_configs"] for t in group["targets"]]
    listen = _environment(services["cdr-emitter"])["WARP_METRICS__LISTEN"]
    host, _, port = listen.rpartition(":")
    assert host == "0.0.0.0"  # reachable from the prometheus container
    assert targets == [f"cdr-emitter:{port}"]
    assert all(job.get("metrics_path", "/metrics") == "/metrics" for job in scrape["scrape_configs"])


def test_the_companion_reaches_kamailio_metric_files_and_ctl_socket_through_the_shared_volume(
    config: dict[str, Any],
) -> None:
    services = config["services"]
    kamailio, emitter = services["kamailio"], services["cdr-emitter"]
    volume = lambda s: {v["source"] if isinstance(v, dict) else str(v).split(":")[0]  # noqa: E731
                        for v in s.get("volumes") or []}
    assert volume(kamailio) & volume(emitter)  # metrics/<node>/ and run/<node>/kamailio_ctl live there
    assert "WARP_METRICS__KAMAILIO_CTL" not in _environment(emitter)  # the default path, on that volume


# ------------------------------------------------------------------ passwords (issue 15 item 11)

NODE_SERVICES = ("migrate", "kamailio", "cdr-emitter", "api")


def _secret_names(service: dict[str, Any]) -> set[str]:
    return {s["source"] if isinstance(s, dict) else str(s) for s in service.get("secrets") or []}


def test_postgres_and_redis_take_their_passwords_from_secret_files(config: dict[str, Any]) -> None:
    services, secrets = config["services"], config["secrets"]
    # the embedded stack's own files by default (`warp stack secrets` makes them)
    assert Path(secrets["postgres_password"]["file"]) == ROOT / ".data" / "secrets" / "postgres.password"
    assert Path(secrets["redis_password"]["file"]) == ROOT / ".data" / "secrets" / "redis.password"
    postgres = services["postgres"]
    env = _environment(postgres)
    assert "postgres_password" in _secret_names(postgres)
    assert "POSTGRES_PASSWORD" not in env and env.get("POSTGRES_HOST_AUTH_METHOD", "") != "trust"
    assert env["POSTGRES_PASSWORD_FILE"] in " ".join(postgres["entrypoint"])  # its readable copy
    assert "/run/secrets/postgres_password" in " ".join(postgres["entrypoint"])
    redis = services["redis"]
    command = " ".join(redis["command"])
    assert "redis_password" in _secret_names(redis)
    assert "requirepass" in command and "/run/secrets/redis_password" in command
    assert "--requirepass" not in command  # the password is on no command line
    assert "/run/secrets/redis_password" in " ".join(redis["healthcheck"]["test"])  # a NOAUTH is not healthy


def test_the_redis_service_disables_the_commands_the_embedded_server_disables(config: dict[str, Any]) -> None:
    from routing_engine.ops import stack

    command = " ".join(config["services"]["redis"]["command"])
    listed = command.split("rename-command %s")[1].split(">>")[0].split()[1:]
    assert tuple(listed) == stack.REDIS_DISABLED_COMMANDS


@pytest.mark.parametrize("name", NODE_SERVICES)
def test_node_processes_read_the_passwords_from_the_secrets(config: dict[str, Any], name: str,
                                                           tmp_path: Path) -> None:
    from routing_engine.settings import load_settings

    service = config["services"][name]
    env = _environment(service)
    assert {"postgres_password", "redis_password"} <= _secret_names(service)
    assert env["WARP_DATABASE__PASSWORD_FILE"] == "/run/secrets/postgres_password"
    assert env["WARP_REDIS__PASSWORD_FILE"] == "/run/secrets/redis_password"
    assert urlsplit(env["DATABASE_URL"]).password is None and urlsplit(env["REDIS_URL"]).password is None
    # what the settings make of it, with the secrets where docker mounts them (here: tmp_path)
    (tmp_path / "pg").write_text("pg-pw\n")
    (tmp_path / "rd").write_text("rd-pw\n")
    env.update({"WARP_DATABASE__PASSWORD_FILE": str(tmp_path / "pg"),
                "WARP_REDIS__PASSWORD_FILE": str(tmp_path / "rd")})
    settings = load_settings(environ={k: v for k, v in env.items() if k.startswith(("WARP_DATABASE", "WARP_REDIS"))
                                      or k in ("DATABASE_URL", "REDIS_URL")})
    assert urlsplit(settings.database_url).password == "pg-pw"
    assert urlsplit(settings.redis_url).password == "rd-pw"


def test_the_image_never_holds_the_data_folder_and_its_secrets() -> None:
    ignored = {line.strip() for line in (ROOT / ".dockerignore").read_text().splitlines()}
    assert ".data" in ignored
