"""The chart's Kubernetes batch back end (#12): ``gateway.batchBackend=kubernetes`` gives the gateway a ServiceAccount,
a namespaced Role with exactly the API permissions the batch code uses, and a RoleBinding; the worker Job the
gateway would build from the rendered settings passes the official schema and stays off the GPU pool.

No API server runs here: these checks read the rendered objects, the values schema and the code. That the API
server grants the Role as read (and that the Job then runs) is proven only on a cluster (docs/deploy.md)."""

from __future__ import annotations

import ast
import inspect
import re
import subprocess
from pathlib import Path

import pytest

from .chart_tools import CHART, KUBE_VERSION, SCENARIOS, documents, render, tool

BATCH_VALUES = CHART / "ci" / "batch-jobs-values.yaml"
BACKENDS = Path(__file__).resolve().parents[2] / "services" / "semforge" / "batch" / "_backends.py"
RBAC_KINDS = {"ServiceAccount", "Role", "RoleBinding", "ClusterRole", "ClusterRoleBinding"}


def _values(*files):
    import yaml

    from .test_chart import _merge

    v = yaml.safe_load((CHART / "values.yaml").read_text())
    for f in files:
        _merge(v, yaml.safe_load(Path(f).read_text()))
    return v


@pytest.fixture(scope="module")
def batch_docs():
    return documents(render([BATCH_VALUES]).stdout)


def _one(docs, kind, suffix=""):
    found = [d for d in docs if d["kind"] == kind and d["metadata"]["name"].endswith(suffix)]
    assert len(found) == 1, f"{kind} *{suffix}: {[d['metadata']['name'] for d in found]}"
    return found[0]


def _gateway(docs):
    return _one(docs, "Deployment", "-gateway")


def _env(container):
    return {e["name"]: e for e in container.get("env", [])}


def _granted(role) -> set[tuple[str, str, str]]:
    return {(g, r, v) for rule in role["rules"] for g in rule.get("apiGroups", []) for r in rule.get("resources", [])
            for v in rule.get("verbs", [])}


# -- the code's declaration is what the code calls ------------------------------------------------------------------
def _api_permission(method: str) -> tuple[str, str, str]:
    """(apiGroup, resource, verb) of a kubernetes client API method, read from the client's own request path and
    HTTP method (``call_api('/apis/batch/v1/namespaces/{namespace}/jobs/{name}/status', 'GET', ...)``)."""
    from kubernetes import client

    for api in (client.BatchV1Api, client.CoreV1Api):
        if hasattr(api, method):
            src = inspect.getsource(getattr(api, f"{method}_with_http_info"))
            break
    else:
        raise AssertionError(f"{method} is no BatchV1Api/CoreV1Api method")
    path, http = re.search(r"call_api\(\s*'([^']+)',\s*'([A-Z]+)'", src).groups()
    m = re.fullmatch(r"/apis?/(?:(?P<group>[^/]+)/)?v1/namespaces/\{namespace\}/(?P<res>[a-z]+)"
                     r"(?P<named>/\{name\})?(?:/(?P<sub>[a-z]+))?", path)
    assert m, f"{method}: not a namespaced path: {path}"
    resource = m["res"] + (f"/{m['sub']}" if m["sub"] else "")
    verb = {("POST", False): "create", ("GET", True): "get", ("GET", False): "list", ("DELETE", True): "delete",
            ("DELETE", False): "deletecollection", ("PATCH", True): "patch", ("PUT", True): "update"}[http, bool(m["named"])]
    return (m["group"] or "", resource, verb)


def _api_calls_in_backends() -> set[str]:
    """Every method of a kubernetes client API class that ``_backends.py`` calls."""
    from kubernetes import client

    api_methods = {n for api in (client.BatchV1Api, client.CoreV1Api) for n in dir(api) if not n.startswith("_")}
    tree = ast.parse(BACKENDS.read_text())
    return {node.func.attr for node in ast.walk(tree)
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr in api_methods}


def test_the_declared_permissions_are_what_the_batch_code_calls():
    pytest.importorskip("kubernetes")
    from semforge.batch._backends import K8S_CALLS, K8S_PERMISSIONS

    called = _api_calls_in_backends()
    assert called == set(K8S_CALLS), f"KubernetesJobs calls {sorted(called)}; K8S_CALLS declares {sorted(K8S_CALLS)}"
    for method, perm in K8S_CALLS.items():
        assert _api_permission(method) == perm, method
    assert K8S_PERMISSIONS == set(K8S_CALLS.values())


def test_the_permission_reader_tells_verbs_apart():
    """The derivation above could fail: a list, a pod log read and a Job patch map to other permissions."""
    pytest.importorskip("kubernetes")
    assert _api_permission("list_namespaced_job") == ("batch", "jobs", "list")
    assert _api_permission("read_namespaced_pod_log") == ("", "pods/log", "get")
    assert _api_permission("patch_namespaced_job") == ("batch", "jobs", "patch")
    assert _api_permission("read_namespaced_job") == ("batch", "jobs", "get")


# -- the rendered RBAC --------------------------------------------------------------------------------------------
def test_role_grants_exactly_the_declared_permissions(batch_docs):
    from semforge.batch._backends import K8S_PERMISSIONS

    role = _one(batch_docs, "Role")
    assert _granted(role) == set(K8S_PERMISSIONS)
    for rule in role["rules"]:
        assert "*" not in rule["apiGroups"] + rule["resources"] + rule["verbs"], rule
        assert not rule.get("nonResourceURLs") and not rule.get("resourceNames")
    assert role["metadata"]["namespace"] == "semforge"  # the release namespace (render uses --namespace semforge)


def test_binding_names_the_gateway_account_and_the_role(batch_docs):
    sa = _one(batch_docs, "ServiceAccount")
    role = _one(batch_docs, "Role")
    rb = _one(batch_docs, "RoleBinding")
    assert rb["roleRef"] == {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": role["metadata"]["name"]}
    assert rb["metadata"]["namespace"] == role["metadata"]["namespace"]
    assert rb["subjects"] == [{"kind": "ServiceAccount", "name": sa["metadata"]["name"], "namespace": "semforge"}]
    assert sa.get("automountServiceAccountToken") is False  # only the pod that asks for it gets the token
    spec = _gateway(batch_docs)["spec"]["template"]["spec"]
    assert spec["serviceAccountName"] == sa["metadata"]["name"]
    assert spec["automountServiceAccountToken"] is True
    for d in batch_docs:  # every other pod: no account of ours, no token
        if d["kind"] in ("Deployment", "Job") and d is not _gateway(batch_docs):
            pod = d["spec"]["template"]["spec"]
            assert pod["automountServiceAccountToken"] is False and "serviceAccountName" not in pod, d["metadata"]["name"]


@pytest.mark.parametrize("name", sorted(SCENARIOS))
def test_nothing_cluster_wide_and_rbac_only_for_kubernetes_batches(name):
    values = _values(*SCENARIOS[name])
    docs = documents(render(SCENARIOS[name]).stdout)
    kinds = {d["kind"] for d in docs}
    assert not kinds & {"ClusterRole", "ClusterRoleBinding"}
    if values["gateway"]["batchBackend"] == "kubernetes":
        assert {"ServiceAccount", "Role", "RoleBinding"} <= kinds
    else:
        assert not kinds & RBAC_KINDS, f"{name}: {kinds & RBAC_KINDS} with the local batch back end"
        env = _env(_gateway(docs)["spec"]["template"]["spec"]["containers"][0])
        assert env["BATCH_BACKEND"]["value"] == "local" and "BATCH_IMAGE" not in env
        assert _gateway(docs)["spec"]["template"]["spec"]["automountServiceAccountToken"] is False


def test_gateway_env_selects_the_job_back_end(batch_docs):
    values = _values(BATCH_VALUES)
    env = {k: e.get("value") for k, e in _env(_gateway(batch_docs)["spec"]["template"]["spec"]["containers"][0]).items()}
    assert env["BATCH_BACKEND"] == "kubernetes"
    assert env["BATCH_IMAGE"] == f"{values['image']['repository']}:{values['image']['tag']}"  # the CPU image
    assert env["BATCH_NAMESPACE"] == "semforge"
    assert env["BATCH_STORE_SECRET"] == _one(batch_docs, "Secret", "-store")["metadata"]["name"]
    assert env["BATCH_WORKERS"] == str(values["gateway"]["batchWorkers"])


def test_rbac_create_false_needs_an_account_and_renders_no_rbac():
    sets = ["gateway.batchBackend=kubernetes", "rbac.create=false"]
    r = render(sets=sets, check=False)
    assert r.returncode != 0 and "gateway.serviceAccountName" in r.stderr, r.stderr
    docs = documents(render(sets=[*sets, "gateway.serviceAccountName=semforge-batch"]).stdout)
    assert not {d["kind"] for d in docs} & RBAC_KINDS
    assert _gateway(docs)["spec"]["template"]["spec"]["serviceAccountName"] == "semforge-batch"


@pytest.mark.parametrize("sets, message", [
    (["gateway.batchBackend=cloud"], "batchBackend"),
    (["gateway.batchBackend=kubernetes", "gateway.batchJobs.namespace=batches"], "cannot reach the in-chart MinIO"),
    (["gateway.batchBackend=kubernetes", "gateway.batchJobs.namespace=Bad_NS"], "namespace"),
    (["gateway.batchJobs.resources.limits.cpu=lots"], "cpu"),
])
def test_bad_batch_values_fail_with_a_clear_message(sets, message):
    r = render(sets=sets, check=False)
    assert r.returncode != 0, f"{sets} rendered"
    assert message in r.stderr, r.stderr


def test_jobs_in_another_namespace_get_the_role_there():
    ext = CHART / "ci" / "external-s3-values.yaml"
    docs = documents(render([ext], sets=["gateway.batchBackend=kubernetes", "gateway.batchJobs.namespace=batches",
                                         "gateway.batchJobs.storeSecret=semforge-s3"]).stdout)
    role, rb = _one(docs, "Role"), _one(docs, "RoleBinding")
    assert role["metadata"]["namespace"] == rb["metadata"]["namespace"] == "batches"
    assert rb["subjects"][0]["namespace"] == "semforge"  # the gateway's account stays in the release namespace
    env = {k: e.get("value") for k, e in _env(_gateway(docs)["spec"]["template"]["spec"]["containers"][0]).items()}
    assert env["BATCH_NAMESPACE"] == "batches" and env["BATCH_STORE_SECRET"] == "semforge-s3"


# -- the Job the gateway would create from the rendered settings -----------------------------------------------
def _job_from_gateway(docs, monkeypatch, tmp_path):
    pytest.importorskip("kubernetes")
    from semforge_gateway.batch import BatchConfig, kubernetes_backend

    from semforge.batch import build_indexed_job
    from semforge.batch._backends import job_to_dict
    from semforge.storage import LocalStore

    container = _gateway(docs)["spec"]["template"]["spec"]["containers"][0]
    for name, e in _env(container).items():
        if "value" in e:
            monkeypatch.setenv(name, e["value"])
    env = _env(container)
    cfg = BatchConfig.from_env(LocalStore(tmp_path / "store"), env["SEMFORGE_STORE"]["value"])
    backend = kubernetes_backend(cfg)
    manifest = {"id": "0123456789abcdef" * 2, "shards": [["a"], ["b"], ["c"]]}
    return backend, job_to_dict(build_indexed_job(manifest, image=backend.image, env=backend.env, **backend.job_kw))


def test_worker_job_from_the_rendered_gateway_passes_the_schema_and_stays_off_gpus(batch_docs, monkeypatch, tmp_path):
    values = _values(BATCH_VALUES)
    backend, job = _job_from_gateway(batch_docs, monkeypatch, tmp_path)
    role = _one(batch_docs, "Role")
    assert backend.namespace == role["metadata"]["namespace"]  # the Jobs go where the Role grants them
    pod = job["spec"]["template"]["spec"]
    (c,) = pod["containers"]
    assert job["spec"]["parallelism"] == 3 and job["spec"]["completions"] == 3  # batchWorkers 8, capped at the shards
    assert c["image"] == f"{values['image']['repository']}:{values['image']['tag']}"
    assert c["resources"] == values["gateway"]["batchJobs"]["resources"]
    assert _env(c)["SEMFORGE_WORKER_THREADS"]["value"] == "4"  # whole cores of limits.cpu
    # CPU pool only: no GPU request, the CPU pool's labels, no toleration of the GPU taint
    assert not any("gpu" in k for part in c["resources"].values() for k in part)
    assert pod["nodeSelector"] == values["cpuPool"]["nodeSelector"]
    gpu_taints = {t["key"] for t in values["gpuPool"]["tolerations"]} | {"nvidia.com/gpu"}
    assert not {t["key"] for t in pod["tolerations"]} & gpu_taints
    assert pod["tolerations"] == values["gateway"]["batchJobs"]["tolerations"]  # camelCase survives the round trip
    assert pod["imagePullSecrets"] == [{"name": "regcred"}]
    assert pod["automountServiceAccountToken"] is False  # workers never call the API
    # the store: the same endpoint as the gateway, the credentials from the chart's Secret under its keys
    secret = _one(batch_docs, "Secret", "-store")
    wenv = _env(c)
    for name in ("S3_ACCESS_KEY", "S3_SECRET_KEY"):
        ref = wenv[name]["valueFrom"]["secretKeyRef"]
        assert ref["name"] == secret["metadata"]["name"] and ref["key"] in secret["data"], ref
    gw_env = _env(_gateway(batch_docs)["spec"]["template"]["spec"]["containers"][0])
    for name in ("SEMFORGE_STORE", "S3_ENDPOINT", "S3_SECURE"):
        assert wenv[name]["value"] == gw_env[name]["value"]
    import yaml

    path = tmp_path / "job.yaml"
    path.write_text(yaml.safe_dump(job))
    r = subprocess.run([tool("kubernetes-validate"), "-k", KUBE_VERSION, "--strict", str(path)],
                       capture_output=True, text=True)
    assert r.returncode == 0 and "WARN" not in r.stdout + r.stderr and "passed" in r.stdout, r.stdout + r.stderr


def test_worker_job_uses_the_external_store_secret_keys(monkeypatch, tmp_path):
    """External store with its own key names (AWS_ACCESS_KEY_ID, ...): the workers read the same keys."""
    ext = CHART / "ci" / "external-s3-values.yaml"
    values = _values(ext)
    docs = documents(render([ext], sets=["gateway.batchBackend=kubernetes"]).stdout)
    _, job = _job_from_gateway(docs, monkeypatch, tmp_path)
    wenv = _env(job["spec"]["template"]["spec"]["containers"][0])
    ext_v = values["store"]["external"]
    assert wenv["S3_ACCESS_KEY"]["valueFrom"]["secretKeyRef"] == {"name": ext_v["existingSecret"], "key": ext_v["accessKeyKey"]}
    assert wenv["S3_SECRET_KEY"]["valueFrom"]["secretKeyRef"] == {"name": ext_v["existingSecret"], "key": ext_v["secretKeyKey"]}
    assert wenv["S3_SECURE"]["value"] == "1"
    assert "imagePullSecrets" not in job["spec"]["template"]["spec"]


@pytest.mark.parametrize("name, raw, message", [
    ("BATCH_NODE_SELECTOR", "semforge.io/pool=cpu", "BATCH_NODE_SELECTOR is not JSON"),
    ("BATCH_TOLERATIONS", '{"key": "a"}', "BATCH_TOLERATIONS must be a JSON list"),
    ("BATCH_WORKER_RESOURCES", "[]", "BATCH_WORKER_RESOURCES must be a JSON object"),
])
def test_bad_worker_settings_are_named(name, raw, message, monkeypatch, tmp_path):
    from semforge_gateway.batch import BatchConfig

    from semforge.errors import UserInputError
    from semforge.storage import LocalStore

    monkeypatch.setenv(name, raw)
    with pytest.raises(UserInputError, match=message):
        BatchConfig.from_env(LocalStore(tmp_path / "store"), None)


@pytest.mark.deploy
def test_the_cpu_image_has_the_kubernetes_client():
    """The gateway runs in the CPU image: the Job back end needs the ``kubernetes`` client there (the image installs
    ``semforge[k8s]``, services/images/wheelhouse.sh). Container suite only (`make test-deploy` rebuilds the image)."""
    import shutil

    from .test_containers import IMAGE, SECURE_RUN, sh

    if shutil.which("docker") is None or sh("docker", "info", check=False).returncode != 0:
        pytest.fail("no Docker engine answers: run `make test-deploy` (installs docker.io, starts dockerd)")
    r = sh("docker", "run", "--rm", *SECURE_RUN, IMAGE, "python", "-c",
           "import kubernetes, semforge_gateway.batch as b; print(kubernetes.__version__, b.kubernetes_backend.__name__)",
           check=False)
    assert r.returncode == 0 and r.stdout.split() == ["31.0.0", "kubernetes_backend"], r.stdout + r.stderr[-1500:]
