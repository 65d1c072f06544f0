"""Static checks of the Helm chart (issue #12): lint, schema validation of every manifest under several values
scenarios, duplicate keys, and the cross-object rules no schema sees. No cluster needed (seconds)."""

from __future__ import annotations

import re
import subprocess

import pytest

from .chart_tools import CHART, KUBE_VERSION, SCENARIOS, documents, helm, render, tool

GPU_COMPONENTS = {"triton", "translate", "training"}
SEMFORGE_SERVICES = {"gateway", "segment", "measure", "classify", "render", "translate"}
LABELS = ["app.kubernetes.io/name", "app.kubernetes.io/instance", "app.kubernetes.io/component",
          "app.kubernetes.io/version", "app.kubernetes.io/managed-by", "app.kubernetes.io/part-of", "helm.sh/chart"]


@pytest.fixture(scope="module", params=sorted(SCENARIOS))
def scenario(request):
    name = request.param
    text = render(SCENARIOS[name]).stdout
    return name, text, documents(text)


def _by_kind(docs, kind):
    return [d for d in docs if d["kind"] == kind]


def _pod_specs(docs):
    """(component, kind, object, pod spec) of every workload."""
    out = []
    for d in docs:
        if d["kind"] in ("Deployment", "Job"):
            out.append((d["metadata"]["labels"]["app.kubernetes.io/component"], d["kind"], d, d["spec"]["template"]["spec"]))
    return out


def _values(scenario_name):
    import yaml

    v = yaml.safe_load((CHART / "values.yaml").read_text())
    for f in SCENARIOS[scenario_name]:
        _merge(v, yaml.safe_load(f.read_text()))
    return v


def _merge(a, b):
    for k, val in b.items():
        if isinstance(val, dict) and isinstance(a.get(k), dict):
            _merge(a[k], val)
        else:
            a[k] = val


@pytest.mark.parametrize("name", sorted(SCENARIOS))
def test_helm_lint_strict(name):
    args = ["lint", "--strict", str(CHART), "--kube-version", KUBE_VERSION]
    for f in SCENARIOS[name]:
        args += ["-f", str(f)]
    r = helm(*args, check=False)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "[WARNING]" not in r.stdout and "[ERROR]" not in r.stdout, r.stdout


def test_every_manifest_passes_the_kubernetes_schemas_strictly(scenario, tmp_path):
    name, text, docs = scenario
    path = tmp_path / f"{name}.yaml"
    path.write_text(text)
    r = subprocess.run([tool("kubernetes-validate"), "-k", KUBE_VERSION, "--strict", str(path)],
                       capture_output=True, text=True)
    out = r.stdout + r.stderr
    assert r.returncode == 0, out
    # kubernetes-validate exits 0 on a removed apiVersion and only prints WARN: a WARN is a failure here
    assert not re.search(r"\bWARN", out), out
    assert out.count(" passed for resource ") == len(docs), out


def test_no_duplicate_keys_in_values_or_manifests(scenario, tmp_path):
    name, text, _ = scenario
    path = tmp_path / f"{name}.yaml"
    path.write_text(text)
    files = [str(path), str(CHART / "values.yaml"), str(CHART / "Chart.yaml"), *map(str, (CHART / "ci").glob("*.yaml"))]
    r = subprocess.run([tool("yamllint"), "-f", "parsable", "-d",
                        "{rules: {key-duplicates: enable, trailing-spaces: enable}}", *files],
                       capture_output=True, text=True)
    assert r.returncode == 0 and not r.stdout.strip(), r.stdout + r.stderr


def test_yamllint_catches_a_duplicate_key(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("a: 1\nb: 2\na: 3\n")
    r = subprocess.run([tool("yamllint"), "-d", "{rules: {key-duplicates: enable}}", str(bad)], capture_output=True, text=True)
    assert r.returncode != 0 and "duplication of key" in r.stdout


def test_standard_labels_and_name_lengths(scenario):
    _, _, docs = scenario
    for d in docs:
        labels = d["metadata"].get("labels", {})
        missing = [k for k in LABELS if k not in labels]
        assert not missing, f"{d['kind']}/{d['metadata']['name']} lacks {missing}"
        assert len(d["metadata"]["name"]) <= 63
        assert re.fullmatch(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?", d["metadata"]["name"])


def test_selectors_match_pod_labels(scenario):
    _, _, docs = scenario
    workloads = {d["metadata"]["name"]: d for d in _by_kind(docs, "Deployment")}
    pod_labels = {n: d["spec"]["template"]["metadata"]["labels"] for n, d in workloads.items()}
    for n, d in workloads.items():
        sel = d["spec"]["selector"]["matchLabels"]
        assert sel.items() <= pod_labels[n].items(), n
        # no other Deployment's pods match (a selector must not adopt another component's pods)
        assert [m for m, lab in pod_labels.items() if sel.items() <= lab.items()] == [n]
    for svc in _by_kind(docs, "Service"):
        sel = svc["spec"]["selector"]
        matched = [n for n, lab in pod_labels.items() if sel.items() <= lab.items()]
        assert len(matched) == 1, f"Service {svc['metadata']['name']} selects {matched}"
        ports = {p["name"] for c in workloads[matched[0]]["spec"]["template"]["spec"]["containers"] for p in c["ports"]}
        for p in svc["spec"]["ports"]:
            assert p["targetPort"] in ports, f"Service {svc['metadata']['name']} targets unknown port {p['targetPort']}"
    for pdb in _by_kind(docs, "PodDisruptionBudget"):
        sel = pdb["spec"]["selector"]["matchLabels"]
        assert len([n for n, lab in pod_labels.items() if sel.items() <= lab.items()]) == 1
    for hpa in _by_kind(docs, "HorizontalPodAutoscaler"):
        assert hpa["apiVersion"] == "autoscaling/v2"
        assert hpa["spec"]["scaleTargetRef"]["name"] in workloads
    for job in _by_kind(docs, "Job"):
        assert "selector" not in job["spec"]  # generated by the API server


def test_every_address_names_an_existing_service_port(scenario):
    _, _, docs = scenario
    services = {s["metadata"]["name"]: {p["port"] for p in s["spec"]["ports"]} for s in _by_kind(docs, "Service")}
    seen = 0
    for comp, _, obj, spec in _pod_specs(docs):
        for c in spec["containers"]:
            for e in c.get("env", []):
                if e["name"].endswith("_ADDR") or e["name"] in ("TRITON_URL", "S3_ENDPOINT"):
                    host, port = e["value"].rsplit(":", 1)
                    if e["name"] == "S3_ENDPOINT" and host not in services:  # external store: outside the chart
                        assert "minio" not in host
                        continue
                    assert host in services, f"{comp}: {e['name']}={e['value']} names no Service"
                    assert int(port) in services[host], f"{comp}: {e['name']}={e['value']}: no such port"
                    seen += 1
    assert seen >= 3


def test_gateway_knows_every_backend(scenario):
    _, _, docs = scenario
    (gw,) = [d for d in _by_kind(docs, "Deployment") if d["metadata"]["name"].endswith("-gateway")]
    env = {e["name"] for e in gw["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert {"SEGMENT_ADDR", "MEASURE_ADDR", "CLASSIFY_ADDR", "SEMFORGE_STORE", "S3_ENDPOINT"} <= env


def test_pdb_below_autoscaling_minimum(scenario):
    _, _, docs = scenario
    hpas = {h["spec"]["scaleTargetRef"]["name"]: h for h in _by_kind(docs, "HorizontalPodAutoscaler")}
    deployments = {d["metadata"]["name"]: d for d in _by_kind(docs, "Deployment")}
    for pdb in _by_kind(docs, "PodDisruptionBudget"):
        target = pdb["metadata"]["name"]
        floor = hpas[target]["spec"]["minReplicas"] if target in hpas else deployments[target]["spec"].get("replicas", 1)
        assert pdb["spec"]["minAvailable"] < floor, f"{target}: PDB {pdb['spec']['minAvailable']} >= {floor}"


def test_gpu_only_where_intended(scenario):
    name, _, docs = scenario
    values = _values(name)
    gpu_keys = {k for k in values["gpuPool"]["nodeSelector"]}
    gpu_taints = {t.get("key") for t in values["gpuPool"]["tolerations"]}
    for comp, kind, obj, spec in _pod_specs(docs):
        gpus = [c["resources"]["limits"].get("nvidia.com/gpu", 0) for c in spec["containers"]]
        requests = [c["resources"]["requests"].get("nvidia.com/gpu", 0) for c in spec["containers"]]
        tolerated = {t.get("key") for t in spec.get("tolerations", [])}
        if comp in GPU_COMPONENTS and values.get(comp, {}).get("gpus", 0):
            assert sum(gpus) >= 1 and gpus == requests, f"{comp} must request a GPU"
            assert gpu_keys <= set(spec.get("nodeSelector", {})), f"{comp} not pinned to the GPU pool"
            assert gpu_taints <= tolerated
            if values["gpuPool"]["affinity"]:
                assert spec["affinity"] == values["gpuPool"]["affinity"]
        else:
            assert not any(gpus) and not any(requests), f"{comp} requests a GPU"
            assert not (tolerated & (gpu_taints | {"nvidia.com/gpu"})), f"{comp} tolerates the GPU taint"
            sel = spec.get("nodeSelector", {})
            assert not any(sel.get(k) == v for k, v in values["gpuPool"]["nodeSelector"].items()), comp
    if name == "gpu":
        comps = {c for c, _, _, s in _pod_specs(docs)
                 if any("nvidia.com/gpu" in c2["resources"]["limits"] for c2 in s["containers"])}
        assert comps == GPU_COMPONENTS


def test_requests_limits_and_security_everywhere(scenario):
    name, _, docs = scenario
    # a service account token only where the API is called: the gateway with the Kubernetes batch back end
    token_for = {"gateway"} if _values(name)["gateway"]["batchBackend"] == "kubernetes" else set()
    for comp, kind, obj, spec in _pod_specs(docs):
        assert spec["securityContext"]["runAsNonRoot"] is True
        assert spec["securityContext"]["runAsUser"] != 0
        assert spec.get("automountServiceAccountToken") is (comp in token_for), comp
        tmp_volumes = {v["name"] for v in spec["volumes"] if "emptyDir" in v}
        for c in spec["containers"]:
            for part in ("requests", "limits"):
                assert {"cpu", "memory"} <= set(c["resources"][part]), f"{comp}: {part}"
            sc = c["securityContext"]
            assert sc["readOnlyRootFilesystem"] is True and sc["allowPrivilegeEscalation"] is False
            assert sc["capabilities"]["drop"] == ["ALL"] and not sc["capabilities"].get("add")
            tmp = [m for m in c["volumeMounts"] if m["mountPath"] == "/tmp"]
            assert tmp and tmp[0]["name"] in tmp_volumes, f"{comp}: read-only root needs a /tmp emptyDir"


def test_rolling_updates_probes_and_drain(scenario):
    name, _, docs = scenario
    values = _values(name)
    for d in _by_kind(docs, "Deployment"):
        comp = d["metadata"]["labels"]["app.kubernetes.io/component"]
        spec = d["spec"]["template"]["spec"]
        (c,) = spec["containers"]
        if comp == "minio":  # one writer of a ReadWriteOnce volume
            assert d["spec"]["strategy"]["type"] == "Recreate"
            continue
        assert d["spec"]["strategy"]["rollingUpdate"]["maxUnavailable"] == 0
        assert c["lifecycle"]["preStop"]["exec"]["command"][0] == "sleep"
        grace = next((int(e["value"]) for e in c["env"] if e["name"] == "GRACE_S"), values["grace"]["seconds"])
        assert spec["terminationGracePeriodSeconds"] > grace + values["preStopSleepSeconds"]
        if comp in SEMFORGE_SERVICES:
            assert c["command"] == ["python", "-m", f"semforge_{comp}.server"]
            assert c["readinessProbe"]["grpc"]["port"] == 50051 and not c["readinessProbe"]["grpc"].get("service")
            assert c["livenessProbe"]["grpc"] == {"port": 50051, "service": "liveness"}
            assert {p["name"] for p in c["ports"]} == {"grpc", "metrics"}
        elif comp == "triton":
            sp = c["startupProbe"]
            budget = sp["periodSeconds"] * sp["failureThreshold"]
            assert 3 * values["triton"]["modelLoadSeconds"] <= budget < 3 * values["triton"]["modelLoadSeconds"] + sp["periodSeconds"]
            assert sp["httpGet"]["path"] == "/v2/health/ready"


def test_triton_scales_on_queue_time(scenario):
    name, _, docs = scenario
    values = _values(name)
    hpas = [h for h in _by_kind(docs, "HorizontalPodAutoscaler") if h["metadata"]["name"].endswith("-triton")]
    if not (values["triton"]["enabled"] and values["triton"]["autoscaling"]["enabled"]):
        assert not hpas
        return
    (h,) = hpas
    (m,) = h["spec"]["metrics"]
    assert m["type"] == "Pods" and m["pods"]["metric"]["name"] == values["triton"]["autoscaling"]["metricName"]


def test_segment_backend_follows_triton(scenario):
    name, _, docs = scenario
    values = _values(name)
    (seg,) = [d for d in _by_kind(docs, "Deployment") if d["metadata"]["name"].endswith("-segment")]
    env = {e["name"]: e.get("value") for e in seg["spec"]["template"]["spec"]["containers"][0]["env"]}
    if values["segment"]["backend"] == "triton":
        assert env["SEGMENT_MODEL"] == "unetpp-triton" and env["TRITON_URL"].split(":")[0].endswith("-triton")
    else:
        assert env["SEGMENT_MODEL"] == "unetpp" and "TRITON_URL" not in env


@pytest.mark.parametrize("sets, message", [
    (["gateway.pdb.minAvailable=2"], "must be below gateway.autoscaling.minReplicas"),
    (["triton.enabled=false"], "segment.backend=triton needs triton.enabled=true"),
    (["classify.enabled=false"], "gateway needs classify"),
    (["minio.enabled=false"], "an object store is required"),
    (["store.external.enabled=true"], "choose one object store"),
    (["translate.enabled=true"], "translate.translators.claimName"),
    (["rollingUpdate.maxUnavailable=1"], "maxUnavailable"),
    (["gateway.replicas=many"], "replicas"),
    (["gateway.colour=blue"], "colour"),
    (["containerSecurityContext.readOnlyRootFilesystem=false"], "readOnlyRootFilesystem"),
])
def test_bad_values_fail_with_a_clear_message(sets, message):
    r = render(sets=sets, check=False)
    assert r.returncode != 0, f"{sets} rendered"
    assert message in r.stderr, r.stderr


def test_chart_metadata():
    import yaml

    import semforge

    chart = yaml.safe_load((CHART / "Chart.yaml").read_text())
    assert chart["apiVersion"] == "v2" and re.fullmatch(r"\d+\.\d+\.\d+", chart["version"])
    assert chart["appVersion"] == semforge.__version__
    assert '\nappVersion: "' in (CHART / "Chart.yaml").read_text()  # quoted


@pytest.mark.parametrize("name", sorted(SCENARIOS))
def test_notes_render(name, tmp_path):
    """NOTES.txt is only rendered by install (needs a cluster): render a copy of it as an ordinary template."""
    import shutil

    chart = tmp_path / "semforge"
    shutil.copytree(CHART, chart)
    shutil.copy(chart / "templates/NOTES.txt", chart / "notes.txt")
    (chart / "templates/notes-check.yaml").write_text(
        'apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: notes\ndata:\n  notes: |\n'
        '    {{- tpl (.Files.Get "notes.txt") . | nindent 4 }}\n')
    args = ["template", "rel", str(chart), "--kube-version", KUBE_VERSION, "--show-only", "templates/notes-check.yaml"]
    for f in SCENARIOS[name]:
        args += ["-f", str(f)]
    out = documents(helm(*args).stdout)[0]["data"]["notes"]
    assert "semforge analyze IMAGE.tif --out report/ --server 127.0.0.1:50051" in out
    assert "rel-semforge-gateway" in out and "<no value>" not in out


def _env(container):
    return {e["name"]: e for e in container.get("env", [])}


def test_auth_services_behind_the_gateway_accept_only_its_secret(scenario):
    """#15 on the cluster: segment/measure/classify run SEMFORGE_AUTH=service with the shared secret from a Secret
    the chart renders (or the operator names); the gateway and the client-facing services check bearer tokens from
    the tokens Secret mounted read-only (or run without auth only when asked)."""
    name, _, docs = scenario
    values = _values(name)
    secrets = {d["metadata"]["name"] for d in _by_kind(docs, "Secret")}
    for comp, kind, _obj, spec in _pod_specs(docs):
        if comp not in SEMFORGE_SERVICES:
            continue
        env = _env(spec["containers"][0])
        mode = env["SEMFORGE_AUTH"]["value"]
        ref = env["SEMFORGE_SERVICE_TOKEN"]["valueFrom"]["secretKeyRef"]
        assert ref["key"] == "serviceToken"
        if not values["auth"]["serviceSecret"]:
            assert ref["name"] in secrets, (comp, ref)
        mounts = {m["name"]: m for m in spec["containers"][0].get("volumeMounts", [])}
        if comp in ("segment", "measure", "classify"):
            assert mode == "service", comp
            assert "tokens" not in mounts and "SEMFORGE_TOKENS" not in env
        else:
            assert mode == values["auth"]["gatewayMode"], comp
            if mode == "tokens":
                assert mounts["tokens"]["readOnly"] is True
                assert env["SEMFORGE_TOKENS"]["value"].startswith(mounts["tokens"]["mountPath"] + "/")
                vol = {v["name"]: v for v in spec["volumes"]}["tokens"]
                assert vol["secret"]["optional"] is True


def test_auth_modes_render():
    docs = documents(render(sets=["auth.gatewayMode=none", "auth.serviceSecret=mine"]).stdout)
    assert not [d for d in _by_kind(docs, "Secret") if d["metadata"]["name"].endswith("-service")]
    for comp, _kind, _obj, spec in _pod_specs(docs):
        if comp in SEMFORGE_SERVICES:
            env = _env(spec["containers"][0])
            assert env["SEMFORGE_SERVICE_TOKEN"]["valueFrom"]["secretKeyRef"]["name"] == "mine"
            assert "tokens" not in {v["name"] for v in spec["volumes"]}
    r = render(sets=["auth.gatewayMode=open"], check=False)
    assert r.returncode != 0 and "gatewayMode" in r.stderr
