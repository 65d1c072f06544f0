"""Batch analysis in shards (issue #12): local workers == in process, resumable, exactly once, cancellable; the
Indexed Job the code builds passes the official schema. A real cluster is used only when KUBECONFIG is set."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from .chart_tools import KUBE_VERSION, tool
from .compare import assert_same_results
from semforge.batch import (BatchCancelled, LocalWorkers, batch_status, build_indexed_job, cancel_batch,
                            run_shard, submit_batch, write_batch_report)
from semforge.storage import open_store

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    from semforge.training.synth import synthetic_sem, write_zeiss_tiff

    d = tmp_path_factory.mktemp("batch-images")
    for i in range(3):
        img, _ = synthetic_sem(seed=20 + i, n_particles=12, size=(384, 768))
        write_zeiss_tiff(d / f"img_{i}.tif", img, 2.5)
    return d


@pytest.fixture(scope="module")
def inprocess(images, tmp_path_factory):
    out = tmp_path_factory.mktemp("batch-inprocess")
    r = subprocess.run([str(ROOT / ".venv/bin/semforge"), "analyze", *map(str, sorted(images.glob("*.tif"))),
                        "--out", str(out), "--sample", "s", "--quiet"], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    return out


def test_two_local_workers_give_the_in_process_results_once(images, inprocess, tmp_path):
    store_dir = tmp_path / "store"
    store = open_store(str(store_dir))
    m = submit_batch(store, [str(images)], shards=2)
    assert [len(s) for s in m["shards"]] == [2, 1] and m["images"] == 3
    seen = []
    st = LocalWorkers(str(store_dir), workers=2, poll_s=0.2).run(store, m, progress=lambda s: seen.append(s["done"]))
    assert st["failed_shards"] == {} and st["done"] == 3 and seen[-1] == 3
    write_batch_report(store, m["id"], tmp_path / "report", title="semforge report: s")
    assert_same_results(inprocess, tmp_path / "report")
    # resumable, each result written once: a rerun of a finished shard analyses nothing
    done = sorted(k for k in store.list("batch-results/") if k.endswith("/done"))
    assert len(done) == 3
    assert run_shard(store, m["id"], 0) == {"shard": 0, "analysed": 0, "skipped": 2}
    # the same images in a new batch reuse the content-addressed results
    again = submit_batch(store, [str(images)], shards=3)
    assert batch_status(store, again["id"])["done"] == 3


def test_cancel_stops_a_shard_and_the_worker_says_so(images, tmp_path):
    store = open_store(str(tmp_path / "store"))
    m = submit_batch(store, [str(images)], shards=1)
    cancel_batch(store, m["id"])
    with pytest.raises(BatchCancelled):
        run_shard(store, m["id"], 0)
    r = subprocess.run([sys.executable, "-m", "semforge.batch", "worker", "--store", str(tmp_path / "store"),
                        "--batch", m["id"], "--shard", "0"], capture_output=True, text=True)
    assert r.returncode == 4 and "cancelled" in r.stderr
    assert batch_status(store, m["id"]) | {"done_per_shard": None} == {
        "id": m["id"], "images": 3, "done": 0, "shards": 1, "done_per_shard": None, "cancelled": True}


def test_bad_input_is_one_line(tmp_path):
    store = open_store(str(tmp_path / "store"))
    with pytest.raises(ValueError, match="no images"):
        submit_batch(store, [str(tmp_path)], shards=1)
    with pytest.raises(ValueError, match="shards must be >= 1"):
        submit_batch(store, [str(tmp_path)], shards=0)
    r = subprocess.run([str(ROOT / ".venv/bin/semforge"), "worker", "--store", str(tmp_path / "store"), "--batch", "nope",
                        "--shard", "0"], capture_output=True, text=True)
    assert r.returncode == 2 and r.stderr.strip() == "semforge: error: no batch 'nope' in the store"
    r = subprocess.run([str(ROOT / ".venv/bin/semforge"), "batch", "report", "nope", "--store", str(tmp_path / "s"),
                        "--out", str(tmp_path / "o")], capture_output=True, text=True)
    assert r.returncode == 2 and len(r.stderr.strip().splitlines()) == 1
    # Kubernetes settings are checked before anything is stored
    (tmp_path / "img.tif").write_bytes(b"")
    for extra, msg in ((["--store-secret", "s3-creds", "--store-secret-keys", "AWS_ACCESS_KEY_ID"], "two key names"),
                       ([], "--image is required")):
        r = subprocess.run([str(ROOT / ".venv/bin/semforge"), "batch", "submit", str(tmp_path / "img.tif"), "--store",
                            str(tmp_path / "k8s-store"), "--backend", "kubernetes", *(["--image", "x"] if extra else []),
                            *extra], capture_output=True, text=True)
        assert r.returncode == 2 and msg in r.stderr and len(r.stderr.strip().splitlines()) == 1, r.stderr
        assert not (tmp_path / "k8s-store").exists() or not any((tmp_path / "k8s-store").rglob("*.json"))


def _job(images, tmp_path, shards=2):
    pytest.importorskip("kubernetes")
    from semforge.batch._backends import job_to_dict

    store = open_store(str(tmp_path / "store"))
    m = submit_batch(store, [str(images)], shards=shards)
    env = [{"name": "SEMFORGE_STORE", "value": "s3://semforge"}, {"name": "S3_ENDPOINT", "value": "minio:9000"},
           {"name": "S3_ACCESS_KEY", "valueFrom": {"secretKeyRef": {"name": "semforge-store", "key": "accessKey"}}}]
    job = build_indexed_job(m, image="semforge-cpu:0.1.0", env=env, parallelism=8)
    return m, job_to_dict(job)


def test_indexed_job_passes_the_official_schema(images, tmp_path):
    import yaml

    m, job = _job(images, tmp_path)
    spec = job["spec"]
    assert job["apiVersion"] == "batch/v1" and spec["completionMode"] == "Indexed"
    assert spec["completions"] == 2 and spec["parallelism"] == 2
    pod = spec["template"]["spec"]
    (c,) = pod["containers"]
    assert c["command"] == ["semforge", "worker", "--batch", m["id"]]
    assert pod["restartPolicy"] == "Never" and pod["securityContext"]["runAsNonRoot"] is True
    assert c["securityContext"]["readOnlyRootFilesystem"] is True and c["securityContext"]["capabilities"]["drop"] == ["ALL"]
    assert {"cpu", "memory"} <= set(c["resources"]["limits"]) and not any("gpu" in k for k in c["resources"]["limits"])
    path = tmp_path / "job.yaml"
    path.write_text(yaml.safe_dump(job))
    r = subprocess.run([tool("kubernetes-validate"), "-k", KUBE_VERSION, "--strict", str(path)],
                       capture_output=True, text=True)
    assert r.returncode == 0 and "WARN" not in r.stdout + r.stderr and "passed" in r.stdout, r.stdout + r.stderr


@pytest.mark.skipif(not os.environ.get("KUBECONFIG"), reason="no cluster: set KUBECONFIG to run the Job for real")
def test_indexed_job_on_a_cluster(images, tmp_path):  # pragma: no cover - needs a cluster and a shared store
    pytest.importorskip("kubernetes")
    from semforge.batch import KubernetesJobs

    store_url = os.environ["SEMFORGE_STORE"]  # an s3:// store the cluster's pods reach too
    image = os.environ["SEMFORGE_WORKER_IMAGE"]
    store = open_store(store_url)
    m = submit_batch(store, [str(images)], shards=2)
    env = [{"name": n, "value": os.environ[n]} for n in ("SEMFORGE_STORE", "S3_ENDPOINT", "S3_ACCESS_KEY",
                                                         "S3_SECRET_KEY") if os.environ.get(n)]
    st = KubernetesJobs(image=image, env=env, namespace=os.environ.get("SEMFORGE_NAMESPACE", "default")).run(store, m)
    assert st["done"] == 3


def test_each_worker_gets_its_share_of_the_cores(images, tmp_path, monkeypatch):
    """#12 scaling: a worker's ONNX sessions (segmenter and shape classifier) run on cores // workers threads,
    set by LocalWorkers through the environment; a Job's pods take theirs from the CPU limit."""
    from semforge.batch._worker import _stages, worker_threads
    from semforge.pipeline import AnalysisOptions

    cores = os.cpu_count() or 1
    lw = LocalWorkers(str(tmp_path / "s"), workers=2)
    assert lw.env["SEMFORGE_WORKER_THREADS"] == lw.env["OMP_NUM_THREADS"] == str(max(1, cores // 2))
    monkeypatch.setenv("SEMFORGE_WORKER_THREADS", "1")
    assert worker_threads() == 1 and worker_threads(3) == 3
    stages = _stages(AnalysisOptions(), worker_threads())
    session = stages.segmenter().for_modality("se").session
    assert session.get_session_options().intra_op_num_threads == 1
    assert stages._classifier.threads == 1
    monkeypatch.setenv("SEMFORGE_WORKER_THREADS", "two")
    with pytest.raises(Exception, match="SEMFORGE_WORKER_THREADS"):
        worker_threads()
    _, job = _job(images, tmp_path)
    env = {e["name"]: e.get("value") for e in job["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert env["SEMFORGE_WORKER_THREADS"] == env["OMP_NUM_THREADS"] == "2"  # limits.cpu "2"


def test_submit_from_an_s3_prefix(images, inprocess, tmp_path, s3_server, monkeypatch):
    """`semforge batch submit s3://BUCKET/PREFIX`: every image under the prefix (sub-"folders" too, nothing
    else) is streamed from the bucket into the batch store; the results are the in-process ones; a prefix with
    no image, a missing bucket name or missing S3 settings are one-line user errors (exit 2)."""
    src = s3_server.store("semforge")
    for p in sorted(images.glob("*.tif")):
        src.put_file(f"incoming/run7/{'sub/' if p.stem.endswith('2') else ''}{p.name}", p)
    src.put_bytes("incoming/run7/notes.txt", b"not an image")
    src.put_file("incoming/other/img_9.tif", next(images.glob("*.tif")))  # outside the prefix
    for n, v in (("S3_ENDPOINT", s3_server.endpoint), ("S3_ACCESS_KEY", s3_server.key),
                 ("S3_SECRET_KEY", s3_server.secret)):
        monkeypatch.setenv(n, v)
    store_dir = tmp_path / "store"
    store = open_store(str(store_dir))
    m = submit_batch(store, ["s3://semforge/incoming/run7/"], shards=1)
    assert m["images"] == 3
    st = LocalWorkers(str(store_dir), workers=1, poll_s=0.2).run(store, m)
    assert st["failed_shards"] == {} and st["done"] == 3
    write_batch_report(store, m["id"], tmp_path / "report", title="semforge report: s")
    assert_same_results(inprocess, tmp_path / "report")
    exe = str(ROOT / ".venv/bin/semforge")
    for source, env, msg in (("s3://semforge/nothing-here/", {}, "no images"),
                             ("s3:///x", {}, "name a bucket"),
                             ("s3://semforge/incoming/run7/", {"S3_ENDPOINT": ""}, "S3_ENDPOINT")):
        r = subprocess.run([exe, "batch", "submit", source, "--store", str(tmp_path / "s2")], capture_output=True,
                           text=True, env={**os.environ, **env}, timeout=120)
        assert r.returncode == 2 and msg in r.stderr and len(r.stderr.strip().splitlines()) == 1, (source, r.stderr)
