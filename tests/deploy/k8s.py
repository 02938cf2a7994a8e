"""Render the kustomize overlays and validate objects against the Kubernetes API schemas offline."""

from __future__ import annotations

import functools
import re
import shutil
import subprocess
from pathlib import Path

import jsonschema
import yaml
from kubernetes_validate import utils as kv
from referencing import Registry, Resource

ROOT = Path(__file__).parents[2]
K8S = ROOT / "deploy" / "k8s"
OVERLAYS = sorted(p.name for p in (K8S / "overlays").iterdir() if p.is_dir())
KUBECTL = shutil.which("kubectl")
VERSIONS = ("1.31.0", kv.latest_version() + ".0")


@functools.cache
def render(overlay: str) -> list[dict]:
    out = subprocess.run([KUBECTL, "kustomize", str(K8S / "overlays" / overlay)],
                         capture_output=True, text=True, check=True, timeout=60)
    return [d for d in yaml.safe_load_all(out.stdout) if d]


def schema_errors(obj: dict, version: str) -> list[str]:
    """Every schema violation of ``obj`` (kubernetes_validate stops at the first)."""
    v = [x for x in kv.all_versions() if kv.major_minor(x) <= kv.major_minor(version)][-1]
    api = re.sub(r"^([^./]*)(?:\.[^/]*)?/", r"\1-", obj["apiVersion"])
    folder = f"kubernetes-json-schema/v{v}-local-strict"
    schema = kv.schema_contents(f"{folder}/{obj['kind'].lower()}-{api}.json", version)
    defs = kv.schema_contents(f"{folder}/_definitions.json", version)
    registry = Resource.from_contents(defs) @ (Resource.from_contents(schema) @ Registry())
    validator = jsonschema.validators.Draft202012Validator(schema, registry=registry)
    return [f"{'.'.join(map(str, e.absolute_path)) or '<root>'}: {e.message}"
            for e in validator.iter_errors(obj)]


def find(objs: list[dict], kind: str, name: str) -> dict:
    return next(o for o in objs if o["kind"] == kind and o["metadata"]["name"] == name)


def pod_specs(objs: list[dict]) -> list[tuple[str, dict]]:
    return [(f"{o['kind']}/{o['metadata']['name']}", o["spec"]["template"]["spec"])
            for o in objs if o["kind"] in ("Deployment", "StatefulSet", "DaemonSet", "Job")]
