"""The Kubernetes manifests are valid (strict schemas, offline) and hardened."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

K8S_DIR = Path(__file__).resolve().parents[1] / "deploy" / "k8s"


def _documents() -> list[tuple[str, dict[str, Any]]]:
    docs = []
    for path in sorted(K8S_DIR.glob("*.yaml")):
        if path.name == "kustomization.yaml":
            continue
        for doc in yaml.safe_load_all(path.read_text()):
            if doc:
                docs.append((path.name, doc))
    return docs


DOCUMENTS = _documents()
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
    for container in pod["containers"]:
        security = container["securityContext"]
        assert security["readOnlyRootFilesystem"] is True
        assert security["allowPrivilegeEscalation"] is False
        assert security["capabilities"]["drop"] == ["ALL"]
        assert {"cpu", "memory"} <= set(container["resources"]["limits"])
        assert {"cpu", "memory"} <= set(container["resources"]["requests"])
        if doc["kind"] != "Deployment":
            continue
        for probe in ("readinessProbe", "livenessProbe", "startupProbe"):
            assert probe in container, probe
        if any(port["name"] == "grpc" for port in container["ports"]):
            assert "grpc" in container["readinessProbe"], "gRPC services use native gRPC probes"


def test_namespace_denies_traffic_by_default() -> None:
    policies = {d["metadata"]["name"]: d for _, d in DOCUMENTS if d["kind"] == "NetworkPolicy"}
    deny = policies["default-deny"]["spec"]
    assert deny["podSelector"] == {}
    assert set(deny["policyTypes"]) == {"Ingress", "Egress"}


def test_every_workload_has_a_network_policy() -> None:
    selected = {
        d["spec"]["podSelector"].get("matchLabels", {}).get("app.kubernetes.io/name")
        for _, d in DOCUMENTS
        if d["kind"] == "NetworkPolicy"
    }
    for expression_policy in (d for _, d in DOCUMENTS if d["kind"] == "NetworkPolicy"):
        for expression in expression_policy["spec"]["podSelector"].get("matchExpressions", []):
            selected.update(expression["values"])
    for _, doc in WORKLOADS:
        assert doc["metadata"]["name"] in selected, doc["metadata"]["name"]
