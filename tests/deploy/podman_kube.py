"""Turn the rendered chart into YAML that `podman kube play` (4.3) runs, changing only what podman cannot do.

podman plays Pod, Deployment, PVC and ConfigMap; it refuses Service, Job, HPA and PDB, its Secret support is
broken, pods find each other only by pod name on a DNS-enabled network, every containerPort is published on
the host, and emptyDir volumes of the same name are shared between pods (FACTS.md). So, per Service, the
Deployment it selects becomes a Pod named like the Service (same pod spec: image, command, env, security
context, resources, volumes); secretKeyRef values are inlined; probes and preStop hooks are dropped (podman
4.3 has no gRPC probes); only the gateway's gRPC port is published (on a chosen host port); emptyDir names are
made unique per pod. Everything else (HPA, PDB, Job, the Secret itself) is left out and listed.
"""

from __future__ import annotations

import base64
import copy

__all__ = ["to_podman"]


def _matches(selector: dict, labels: dict) -> bool:
    return selector.items() <= labels.items()


def to_podman(docs: list[dict], *, publish: dict[str, int], extra_pods: list[dict] = ()) -> tuple[list[dict], list[str]]:
    """(documents for podman kube play, "Kind/name" of what was left out).

    ``publish`` maps a Service name to the host port its ``grpc`` port is published on.
    """
    secrets = {d["metadata"]["name"]: {k: base64.b64decode(v).decode() for k, v in d.get("data", {}).items()}
               for d in docs if d["kind"] == "Secret"}
    deployments = [d for d in docs if d["kind"] == "Deployment"]
    out, skipped = list(extra_pods), []
    for svc in (d for d in docs if d["kind"] == "Service"):
        name = svc["metadata"]["name"]
        (dep,) = [d for d in deployments if _matches(svc["spec"]["selector"], d["spec"]["template"]["metadata"]["labels"])]
        spec = copy.deepcopy(dep["spec"]["template"]["spec"])
        renamed = {}
        for v in spec.get("volumes", []):
            if "emptyDir" in v:
                renamed[v["name"]] = f"{name}-{v['name']}"
                v["name"] = renamed[v["name"]]
                v["emptyDir"].pop("sizeLimit", None)
        for c in spec["containers"]:
            for key in ("readinessProbe", "livenessProbe", "startupProbe", "lifecycle"):
                c.pop(key, None)
            for m in c.get("volumeMounts", []):
                m["name"] = renamed.get(m["name"], m["name"])
            for e in c.get("env", []):
                ref = e.get("valueFrom", {}).get("secretKeyRef")
                if ref:
                    e.pop("valueFrom")
                    e["value"] = secrets[ref["name"]][ref["key"]]
            ports = []
            for p in c.get("ports", []):
                if name in publish and p["name"] == "grpc":
                    ports.append({**p, "hostPort": publish[name], "hostIP": "127.0.0.1"})
            c["ports"] = ports
        out.append({"apiVersion": "v1", "kind": "Pod",
                    "metadata": {"name": name, "labels": dep["spec"]["template"]["metadata"]["labels"]},
                    "spec": spec})
    for d in docs:
        if d["kind"] not in ("Service", "Deployment"):
            skipped.append(f"{d['kind']}/{d['metadata']['name']}")
    return out, skipped
