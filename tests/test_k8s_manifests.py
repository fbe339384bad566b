"""The Kubernetes manifests are valid (strict schemas, offline) and hardened, and each service
runs, and migrates, with its own command and its own settings alone."""

from __future__ import annotations

from typing import Any

import kubernetes_validate
import pytest
import yaml

from huntaze_devstack.suite import SUITE
from tests.manifests import (
    K8S_DIR,
    container,
    documents,
    secret_names,
    selects,
    service_of,
    workloads,
)

DOCUMENTS = documents()
WORKLOADS = [(name, doc) for name, doc in DOCUMENTS if doc["kind"] in {"Deployment", "Job"}]


@pytest.mark.parametrize(
    ("name", "doc"),
    DOCUMENTS,
    ids=[f"{n}:{d['kind']}/{d['metadata']['name']}" for n, d in DOCUMENTS],
)
def test_manifest_is_valid(name: str, doc: dict[str, Any]) -> None:
    kubernetes_validate.validate(doc, "1.37.0", strict=True)


def test_kustomization_lists_every_manifest() -> None:
    listed = set(yaml.safe_load((K8S_DIR / "kustomization.yaml").read_text())["resources"])
    present = {p.name for p in K8S_DIR.glob("*.yaml")} - {"kustomization.yaml"}
    assert listed == present


@pytest.mark.parametrize(("name", "doc"), WORKLOADS, ids=[n for n, _ in WORKLOADS])
def test_workload_is_hardened(name: str, doc: dict[str, Any]) -> None:
    pod = doc["spec"]["template"]["spec"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["automountServiceAccountToken"] is False
    for spec in pod["containers"]:
        security = spec["securityContext"]
        assert security["readOnlyRootFilesystem"] is True
        assert security["allowPrivilegeEscalation"] is False
        assert security["capabilities"]["drop"] == ["ALL"]
        assert {"cpu", "memory"} <= set(spec["resources"]["limits"])
        assert {"cpu", "memory"} <= set(spec["resources"]["requests"])
        if doc["kind"] != "Deployment":
            continue
        for probe in ("readinessProbe", "livenessProbe", "startupProbe"):
            assert probe in spec, probe
        if any(port["name"] == "grpc" for port in spec["ports"]):
            assert "grpc" in spec["readinessProbe"], "gRPC services use native gRPC probes"


def test_namespace_denies_traffic_by_default() -> None:
    policies = {d["metadata"]["name"]: d for _, d in DOCUMENTS if d["kind"] == "NetworkPolicy"}
    deny = policies["default-deny"]["spec"]
    assert deny["podSelector"] == {}
    assert set(deny["policyTypes"]) == {"Ingress", "Egress"}


def test_every_workload_has_a_network_policy() -> None:
    policies = [
        doc["spec"]["podSelector"]
        for _, doc in DOCUMENTS
        if doc["kind"] == "NetworkPolicy" and doc["spec"]["podSelector"]
    ]
    for _, doc in WORKLOADS:
        labels = doc["spec"]["template"]["metadata"]["labels"]
        assert any(selects(policy, labels) for policy in policies), doc["metadata"]["name"]


def test_each_schema_is_migrated_by_its_own_services_job() -> None:
    jobs = [doc for doc in workloads() if doc["kind"] == "Job"]
    migrated = {}
    for job in jobs:
        service = service_of(job)
        assert container(job)["command"] == ["python", "-m", service.module, "migrate"]
        migrated[service.name] = job
    assert set(migrated) == {service.name for service in SUITE if service.schema}


def test_each_service_is_deployed_with_its_serve_command() -> None:
    deployed = {}
    for deployment in (doc for doc in workloads() if doc["kind"] == "Deployment"):
        service = service_of(deployment)
        expected = ["python", "-m", service.module, *(["serve"] if service.schema else [])]
        assert container(deployment)["command"] == expected
        deployed[service.name] = deployment
    assert set(deployed) == {service.name for service in SUITE}


def test_a_workload_reads_only_its_own_services_secret() -> None:
    for workload in workloads():
        service = service_of(workload)
        own = {f"huntaze-{service.name}"} if service.schema else set()
        assert secret_names(workload) == own, workload["metadata"]["name"]


def test_no_workload_runs_the_local_stack() -> None:
    for workload in workloads():
        assert "huntaze_devstack" not in " ".join(container(workload)["command"])


def _metrics_port_setting(service_name: str) -> int:
    """The default of the service's `<service>_metrics_port` setting (what the process binds)."""
    from huntaze_devstack.settings_doc import settings_classes  # noqa: PLC0415

    field = f"{service_name}_metrics_port"
    for _, settings in settings_classes():
        if field in settings.model_fields:
            default = settings.model_fields[field].default
            assert isinstance(default, int)
            return default
    raise AssertionError(f"no setting {field}")


def test_every_deployment_exposes_its_metrics_port_to_the_scraper() -> None:
    policies = [doc for _, doc in DOCUMENTS if doc["kind"] == "NetworkPolicy"]
    for deployment in (doc for doc in workloads() if doc["kind"] == "Deployment"):
        service = service_of(deployment)
        port = _metrics_port_setting(service.name)
        declared = {p["name"]: p["containerPort"] for p in container(deployment)["ports"]}
        assert declared.get("metrics") == port, deployment["metadata"]["name"]
        annotations = deployment["spec"]["template"]["metadata"]["annotations"]
        assert annotations["prometheus.io/port"] == str(port)
        labels = deployment["spec"]["template"]["metadata"]["labels"]
        assert any(
            selects(policy["spec"]["podSelector"], labels)
            and any(
                rule_port.get("port") == "metrics"
                for rule in policy["spec"].get("ingress", [])
                for rule_port in rule.get("ports", [])
            )
            for policy in policies
        ), f"no NetworkPolicy lets the scraper reach {deployment['metadata']['name']}"
