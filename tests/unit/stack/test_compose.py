"""docker/compose.yaml must run the same services as the local stack."""

from pathlib import Path

import yaml

from config.settings import Settings
from stack.services import local_services

COMPOSE = Path(__file__).resolve().parents[3] / "docker" / "compose.yaml"


def load_compose() -> dict:
    return yaml.safe_load(COMPOSE.read_text())


def test_compose_has_the_infrastructure_and_every_app_service() -> None:
    services = load_compose()["services"]
    app = {service.name for service in local_services(Settings())}
    assert {"kafka", "redis", "mysql", "migrate", "cassandra"} | app == set(services)


def test_each_app_service_runs_the_same_module_as_locally() -> None:
    services = load_compose()["services"]
    for service in local_services(Settings()):
        assert services[service.name]["command"] == ["python", "-m", service.module]
        assert "healthcheck" in services[service.name], service.name


def test_kafka_is_apache_kafka_in_kraft_mode() -> None:
    kafka = load_compose()["services"]["kafka"]
    assert kafka["image"].startswith("apache/kafka:4.")
    assert kafka["environment"]["KAFKA_PROCESS_ROLES"] == "broker,controller"


def test_connectors_have_distinct_ids_and_ports() -> None:
    services = load_compose()["services"]
    ids = {
        services[name]["environment"]["IM_CONNECTOR_ID"]
        for name in ("connector-c1", "connector-c2")
    }
    assert ids == {"c1", "c2"}


def test_cassandra_is_optional_behind_its_profile_and_selectable_by_env() -> None:
    compose = load_compose()
    cassandra = compose["services"]["cassandra"]
    assert cassandra["image"].startswith("cassandra:5.")
    assert cassandra["profiles"] == ["cassandra"]
    assert "healthcheck" in cassandra
    # Only the archive node is behind a profile: a plain `up` is the MySQL stack.
    assert [name for name, svc in compose["services"].items() if "profiles" in svc] == ["cassandra"]
    env = compose["x-mmim-env"]
    assert env["IM_ARCHIVE_BACKEND"] == "${IM_ARCHIVE_BACKEND:-mysql}"
    assert env["IM_CASSANDRA_HOSTS"] == "cassandra"
