"""docker-compose.yml, deploy/prometheus.yml and the Dockerfile, checked without Docker."""

from __future__ import annotations

import json
import shlex
import tomllib
from importlib.resources import files
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

from kernel.settings import Settings

ROOT = Path(__file__).resolve().parents[2]
SERVICES = {"kafka", "worker", "gateway", "prometheus", "grafana", "mailpit"}


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    return loaded


def test_compose_file_follows_the_compose_specification(compose: dict[str, Any]) -> None:
    # The Compose specification's own schema, as vendored by check-jsonschema.
    schema = json.loads(
        files("check_jsonschema.builtin_schemas.vendor").joinpath("compose-spec.json").read_text()
    )
    errors = sorted(
        jsonschema.Draft7Validator(schema).iter_errors(compose), key=lambda e: list(e.absolute_path)
    )
    assert not errors, "\n".join(f"{'/'.join(map(str, e.absolute_path))}: {e.message}" for e in errors)


def test_services(compose: dict[str, Any]) -> None:
    assert set(compose["services"]) == SERVICES


def test_herald_variables_are_real_settings(compose: dict[str, Any]) -> None:
    # A misspelt HERALD_ variable is silently ignored by the settings, so catch it here.
    known = {f"HERALD_{name.upper()}" for name in Settings.model_fields}
    for name in ("worker", "gateway"):
        variables = set(compose["services"][name]["environment"])
        assert variables <= known, f"{name}: unknown settings {sorted(variables - known)}"


def test_services_reach_kafka_where_it_advertises_itself(compose: dict[str, Any]) -> None:
    kafka = compose["services"]["kafka"]
    assert "PLAINTEXT://kafka:9092" in kafka["environment"]["KAFKA_ADVERTISED_LISTENERS"].split(",")
    assert "healthcheck" in kafka
    for name in ("worker", "gateway"):
        service = compose["services"][name]
        assert service["environment"]["HERALD_BROKER"] == "kafka://kafka:9092"
        assert service["depends_on"]["kafka"]["condition"] == "service_healthy"


def test_worker_sends_mail_to_mailpit(compose: dict[str, Any]) -> None:
    env = compose["services"]["worker"]["environment"]
    assert (env["HERALD_SMTP_HOST"], str(env["HERALD_SMTP_PORT"])) == ("mailpit", "1025")


def test_mounted_files_exist(compose: dict[str, Any]) -> None:
    for name, service in compose["services"].items():
        for volume in service.get("volumes", []):
            source = volume.split(":", 1)[0]
            if source.startswith("."):
                assert (ROOT / source).exists(), f"{name} mounts {source}, which does not exist"


def test_prometheus_scrapes_the_ports_herald_listens_on(compose: dict[str, Any]) -> None:
    config = yaml.safe_load((ROOT / "deploy" / "prometheus.yml").read_text())
    jobs = {job["job_name"]: job for job in config["scrape_configs"]}
    defaults = Settings.model_fields
    assert {job["metrics_path"] for job in jobs.values()} == {"/metrics"}
    # Every worker replica, found by the service's DNS name, on the worker's port.
    (worker_sd,) = jobs["herald-worker"]["dns_sd_configs"]
    assert (worker_sd["names"], worker_sd["type"]) == (["worker"], "A")
    assert worker_sd["port"] == defaults["worker_port"].default
    (gateway_targets,) = jobs["herald-gateway"]["static_configs"]
    assert gateway_targets["targets"] == [f"gateway:{defaults['gateway_port'].default}"]
    assert "8080:8080" in compose["services"]["gateway"]["ports"]


def test_workers_can_run_as_replicas(compose: dict[str, Any]) -> None:
    worker = compose["services"]["worker"]
    assert worker["deploy"]["replicas"] >= 2
    # Replicas cannot share a fixed host port or container name.
    assert "ports" not in worker and "container_name" not in worker
    assert worker["environment"]["HERALD_WORKER_HOST"] == "0.0.0.0"


def test_prometheus_loads_the_rules_it_is_given(compose: dict[str, Any]) -> None:
    config = yaml.safe_load((ROOT / "deploy" / "prometheus.yml").read_text())
    mounts = dict(v.split(":")[:2][::-1] for v in compose["services"]["prometheus"]["volumes"])
    assert config["rule_files"] == ["/etc/prometheus/rules.yml"]
    assert mounts["/etc/prometheus/rules.yml"] == "./deploy/prometheus/rules.yml"
    assert mounts["/etc/prometheus/prometheus.yml"] == "./deploy/prometheus.yml"


def test_grafana_is_provisioned_with_the_dashboard(compose: dict[str, Any]) -> None:
    grafana = compose["services"]["grafana"]
    image, tag = grafana["image"].split(":")
    assert image == "grafana/grafana-oss" and tag != "latest"
    mounts = dict(v.split(":")[:2][::-1] for v in grafana["volumes"])
    assert mounts["/etc/grafana/provisioning"] == "./deploy/grafana/provisioning"
    provider = yaml.safe_load((ROOT / "deploy/grafana/provisioning/dashboards/herald.yml").read_text())
    dashboards_dir = provider["providers"][0]["options"]["path"]
    assert (ROOT / mounts[dashboards_dir] / "herald.json").is_file()
    home = grafana["environment"]["GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH"]
    assert home == f"{dashboards_dir}/herald.json"


def test_dockerfile_copies_what_exists_and_runs_the_console_script() -> None:
    instructions = [line.split(None, 1) for line in (ROOT / "Dockerfile").read_text().splitlines()]
    instructions = [parts for parts in instructions if len(parts) == 2 and not parts[0].startswith("#")]
    for keyword, arguments in instructions:
        if keyword == "COPY":
            for source in shlex.split(arguments)[:-1]:
                assert (ROOT / source).exists(), f"the Dockerfile copies {source}, which does not exist"
    entrypoint = [json.loads(arguments) for keyword, arguments in instructions if keyword == "ENTRYPOINT"]
    assert entrypoint == [["herald"]]
    scripts = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    assert "herald" in scripts
