"""Reads `deploy/k8s`: its documents, its workloads, and what each workload's container runs
with (command and environment), so tests can check and run them as the cluster would."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml

from huntaze_devstack.suite import SUITE, Service

K8S_DIR = Path(__file__).resolve().parents[1] / "deploy" / "k8s"
WORKLOAD_KINDS = {"Deployment", "Job"}


def documents() -> list[tuple[str, dict[str, Any]]]:
    """(file name, document) for every resource the kustomization applies."""
    docs = []
    for path in sorted(K8S_DIR.glob("*.yaml")):
        if path.name == "kustomization.yaml":
            continue
        for doc in yaml.safe_load_all(path.read_text()):
            if doc:
                docs.append((path.name, doc))
    return docs


def workloads() -> list[dict[str, Any]]:
    return [doc for _, doc in documents() if doc["kind"] in WORKLOAD_KINDS]


def container(workload: dict[str, Any]) -> dict[str, Any]:
    """The workload's one container."""
    (only,) = workload["spec"]["template"]["spec"]["containers"]
    return dict(only)


def service_of(workload: dict[str, Any]) -> Service:
    """The service of the suite whose module the workload's container runs."""
    command = container(workload)["command"]
    assert command[:2] == ["python", "-m"], command
    return next(service for service in SUITE if service.module == command[2])


def secret_names(workload: dict[str, Any]) -> set[str]:
    sources = container(workload).get("envFrom", [])
    return {source["secretRef"]["name"] for source in sources if "secretRef" in source}


def config_maps() -> dict[str, dict[str, str]]:
    return {
        doc["metadata"]["name"]: dict(doc.get("data", {}))
        for _, doc in documents()
        if doc["kind"] == "ConfigMap"
    }


def environment(
    workload: dict[str, Any], secrets: Mapping[str, Mapping[str, str]]
) -> dict[str, str]:
    """The container's environment as Kubernetes composes it: `envFrom` sources in order, then
    `env`; `secrets` stands in for the Secrets created out of band."""
    maps = config_maps()
    env: dict[str, str] = {}
    spec = container(workload)
    for source in spec.get("envFrom", []):
        if "configMapRef" in source:
            env.update(maps[source["configMapRef"]["name"]])
        else:
            env.update(secrets[source["secretRef"]["name"]])
    for variable in spec.get("env", []):
        env[variable["name"]] = str(variable["value"])
    return env


def selects(selector: dict[str, Any], labels: Mapping[str, str]) -> bool:
    """Whether a label selector (matchLabels and In expressions) selects `labels`."""
    for key, value in selector.get("matchLabels", {}).items():
        if labels.get(key) != value:
            return False
    for expression in selector.get("matchExpressions", []):
        assert expression["operator"] == "In", expression
        if labels.get(expression["key"]) not in expression["values"]:
            return False
    return True
