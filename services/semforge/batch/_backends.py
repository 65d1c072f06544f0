"""Where shards run: local worker processes, or an Indexed Kubernetes Job (built with the kubernetes client)."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from typing import Callable

from ..errors import UserInputError
from ..storage import ObjectStore
from ._manifest import batch_status, cancel_batch
from ._worker import THREADS_ENV

__all__ = ["LocalWorkers", "KubernetesJobs", "build_indexed_job", "K8S_CALLS", "K8S_PERMISSIONS"]

# Every Kubernetes API call KubernetesJobs makes (client method -> (apiGroup, resource, verb)), next to the code
# that makes them: the chart's Role grants exactly K8S_PERMISSIONS (tests/deploy/test_chart_batch.py), and a test
# fails when this class calls a method that is not listed here. Deleting the Job with propagation Background
# leaves its pods to the garbage collector: no permission on pods is needed; nothing reads pod logs.
K8S_CALLS = {
    "create_namespaced_job": ("batch", "jobs", "create"),
    "read_namespaced_job_status": ("batch", "jobs/status", "get"),
    "delete_namespaced_job": ("batch", "jobs", "delete"),
}
K8S_PERMISSIONS = frozenset(K8S_CALLS.values())

Progress = Callable[[dict], None]


def _wait(store: ObjectStore, batch_id: str, alive: Callable[[], bool], progress: Progress | None,
          poll_s: float) -> dict:
    last = None
    while True:
        running = alive()
        st = batch_status(store, batch_id)
        if progress and st["done"] != last:
            progress(st)
            last = st["done"]
        if not running:
            return st
        time.sleep(poll_s)


def _die_with_parent():
    """A ``preexec_fn`` that makes the worker get SIGTERM when the process that started it dies (Linux
    PR_SET_PDEATHSIG), so a gateway killed without warning leaves no worker writing behind the replica that
    resumes its batch. Resolved here, in the parent: the child only makes the C call (no import after fork)."""
    if not sys.platform.startswith("linux"):
        return None
    import ctypes
    import functools
    import signal

    try:
        prctl = ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        return None
    return functools.partial(prctl, 1, int(signal.SIGTERM))  # PR_SET_PDEATHSIG = 1


class LocalWorkers:
    """Shards as local worker processes (``python -m semforge.batch worker``), at most ``workers`` at a time.

    ``store_url`` must be one the worker processes can open (a directory, or ``s3://`` with ``S3_*`` set).
    """

    def __init__(self, store_url: str, *, workers: int = 1, env: dict | None = None, poll_s: float = 0.5,
                 threads: int | None = None):
        if workers < 1:
            raise UserInputError(f"workers must be >= 1, got {workers}", field="workers")
        self.store_url, self.workers, self.poll_s = store_url, workers, poll_s
        # each worker's models get cores // workers intra-op threads (ONNX Runtime would take every core per
        # session: two workers on two cores then fight over both); OMP_NUM_THREADS for BLAS/OpenMP and torch
        self.threads = threads or max(1, (os.cpu_count() or 1) // workers)
        self.env = {**os.environ, THREADS_ENV: str(self.threads), "OMP_NUM_THREADS": str(self.threads),
                    **(env or {})}

    def _command(self, batch_id: str, shard: int) -> list[str]:
        return [sys.executable, "-m", "semforge.batch", "worker", "--store", self.store_url, "--batch", batch_id,
                "--shard", str(shard), "--quiet"]

    def run(self, store: ObjectStore, manifest: dict, *, progress: Progress | None = None,
            stop: threading.Event | None = None) -> dict:
        """Run every shard; returns the final status with ``failed_shards`` (shard -> exit code). ``stop`` set:
        the workers are terminated (finished images stay done) and the status so far is returned."""
        pending = list(range(len(manifest["shards"])))
        running: dict[int, subprocess.Popen] = {}
        failed: dict[int, int] = {}
        die_with_parent = _die_with_parent()

        def alive() -> bool:
            if stop is not None and stop.is_set():
                pending.clear()
                for p in running.values():
                    p.terminate()
                for p in running.values():
                    p.wait()
                running.clear()
                return False
            for s, p in list(running.items()):
                if p.poll() is not None:
                    del running[s]
                    if p.returncode != 0:
                        failed[s] = p.returncode
            while pending and len(running) < self.workers:
                s = pending.pop(0)
                running[s] = subprocess.Popen(self._command(manifest["id"], s), env=self.env,
                                              preexec_fn=die_with_parent)
            return bool(running)

        try:
            st = _wait(store, manifest["id"], alive, progress, self.poll_s)
        except BaseException:
            for p in running.values():
                p.terminate()
            raise
        return {**st, "failed_shards": failed}


def _cpu_whole(q) -> int:
    """Whole cores of a Kubernetes CPU quantity ("2", "1500m", 0.5), at least 1."""
    q = str(q)
    v = float(q[:-1]) / 1000 if q.endswith("m") else float(q)
    return max(1, int(v))


def build_indexed_job(manifest: dict, *, image: str, env: list[dict] | None = None, name: str | None = None,
                      parallelism: int | None = None, resources: dict | None = None,
                      node_selector: dict | None = None, tolerations: list[dict] | None = None,
                      backoff_limit: int = 3, ttl_seconds_after_finished: int = 86400, labels: dict | None = None,
                      image_pull_policy: str = "IfNotPresent", image_pull_secrets: list[str] | None = None):
    """The Indexed Job of a batch as a ``kubernetes.client.V1Job``: one completion per shard, each pod running
    ``semforge worker --batch ID`` (the shard is ``JOB_COMPLETION_INDEX``), non-root, read-only root, /tmp emptyDir.

    ``env``: the store settings of the worker (``SEMFORGE_STORE``, ``S3_*``; dicts in the Kubernetes
    EnvVar form, so credentials can come from a Secret).
    """
    from kubernetes import client as k

    shards = len(manifest["shards"])
    job_name = name or f"semforge-batch-{manifest['id'][:12]}"
    lab = {"app.kubernetes.io/name": "semforge", "app.kubernetes.io/component": "batch-worker",
           "app.kubernetes.io/part-of": "semforge", "semforge.io/batch": manifest["id"][:63], **(labels or {})}
    res = resources or {"requests": {"cpu": "1", "memory": "2Gi"}, "limits": {"cpu": "2", "memory": "4Gi"}}
    # threads of the worker's models from its CPU limit (os.cpu_count() in a pod is the node's, not the limit)
    threads = str(_cpu_whole(res["limits"].get("cpu", res["requests"].get("cpu", "1"))))
    envs = [k.V1EnvVar(name="HOME", value="/tmp"), k.V1EnvVar(name="MPLCONFIGDIR", value="/tmp/matplotlib"),
            k.V1EnvVar(name=THREADS_ENV, value=threads), k.V1EnvVar(name="OMP_NUM_THREADS", value=threads)]
    for e in env or []:
        if "valueFrom" in e:
            ref = e["valueFrom"]["secretKeyRef"]
            envs.append(k.V1EnvVar(name=e["name"], value_from=k.V1EnvVarSource(
                secret_key_ref=k.V1SecretKeySelector(name=ref["name"], key=ref["key"]))))
        else:
            envs.append(k.V1EnvVar(name=e["name"], value=str(e["value"])))
    container = k.V1Container(
        name="worker", image=image, image_pull_policy=image_pull_policy, command=["semforge", "worker", "--batch", manifest["id"]], env=envs,
        resources=k.V1ResourceRequirements(requests=res["requests"], limits=res["limits"]),
        security_context=k.V1SecurityContext(allow_privilege_escalation=False, read_only_root_filesystem=True,
                                             capabilities=k.V1Capabilities(drop=["ALL"])),
        volume_mounts=[k.V1VolumeMount(name="tmp", mount_path="/tmp")])
    pod = k.V1PodSpec(
        restart_policy="Never", automount_service_account_token=False, containers=[container],
        security_context=k.V1PodSecurityContext(run_as_non_root=True, run_as_user=10001, run_as_group=10001,
                                                seccomp_profile=k.V1SeccompProfile(type="RuntimeDefault")),
        node_selector=node_selector or None,
        tolerations=[k.V1Toleration(**t) for t in tolerations] if tolerations else None,
        image_pull_secrets=[k.V1LocalObjectReference(name=n) for n in image_pull_secrets] if image_pull_secrets else None,
        volumes=[k.V1Volume(name="tmp", empty_dir=k.V1EmptyDirVolumeSource(size_limit="2Gi"))])
    return k.V1Job(
        api_version="batch/v1", kind="Job", metadata=k.V1ObjectMeta(name=job_name, labels=lab),
        spec=k.V1JobSpec(completion_mode="Indexed", completions=shards, parallelism=min(parallelism or shards, shards),
                         backoff_limit=backoff_limit, ttl_seconds_after_finished=ttl_seconds_after_finished,
                         template=k.V1PodTemplateSpec(metadata=k.V1ObjectMeta(labels=lab), spec=pod)))


def job_to_dict(job) -> dict:
    """The Job as the API server would receive it (camelCase, no nulls)."""
    from kubernetes import client as k

    return k.ApiClient().sanitize_for_serialization(job)


class KubernetesJobs:
    """Shards as an Indexed Job in the cluster ``KUBECONFIG`` (or the in-cluster config) points at.

    Workers exist only while a batch runs (the Job's pods): scale-to-zero by construction.
    """

    def __init__(self, *, image: str, env: list[dict], namespace: str = "default", poll_s: float = 2.0, **job_kw):
        self.image, self.env, self.namespace, self.poll_s, self.job_kw = image, env, namespace, poll_s, job_kw

    def _api(self):
        from kubernetes import client, config

        try:
            config.load_incluster_config()
        except config.ConfigException:
            config.load_kube_config()
        return client.BatchV1Api()

    def run(self, store: ObjectStore, manifest: dict, *, progress: Progress | None = None, wait: bool = True,
            stop: threading.Event | None = None) -> dict:
        """Create the Job; with ``wait``, follow it until it completes or fails, or until ``stop`` is set (the Job
        goes on in the cluster: it needs no driver)."""
        api = self._api()
        job = build_indexed_job(manifest, image=self.image, env=self.env, **self.job_kw)
        api.create_namespaced_job(self.namespace, job)
        name = job.metadata.name
        if not wait:
            return {**batch_status(store, manifest["id"]), "job": name}

        def alive() -> bool:
            if stop is not None and stop.is_set():
                return False
            s = api.read_namespaced_job_status(name, self.namespace).status
            return not any(c.type in ("Complete", "Failed") and c.status == "True" for c in (s.conditions or []))

        return {**_wait(store, manifest["id"], alive, progress, self.poll_s), "job": name}

    def cancel(self, store: ObjectStore, batch_id: str) -> None:
        cancel_batch(store, batch_id)
        from kubernetes import client

        self._api().delete_namespaced_job(f"semforge-batch-{batch_id[:12]}", self.namespace,
                                          body=client.V1DeleteOptions(propagation_policy="Background"))
