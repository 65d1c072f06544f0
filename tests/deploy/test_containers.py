"""The container suite (issue #12; `make test-deploy`, marker ``deploy``): the project's images on a real Docker
engine, and the rendered Helm chart run by podman kube play. One analysis through the gateway from the host
each time must give the same results as the in-process run.

Needs: the images built by `make images` / `make test-deploy` (semforge-cpu:latest), dockerd, podman.
"""

from __future__ import annotations

import shutil
import subprocess
import time
import uuid
from pathlib import Path

import pytest

from .chart_tools import CHART, documents, render
from .compare import assert_same_results
from .podman_kube import to_podman

pytestmark = pytest.mark.deploy

ROOT = Path(__file__).resolve().parents[2]
IMAGE = "semforge-cpu:latest"
S3_IMAGE = "semforge-s3test:latest"
KEY, SECRET = "semforgetest", "semforgetestsecret"
SECURE_RUN = ["--read-only", "--tmpfs", "/tmp:uid=10001,gid=10001", "--cap-drop", "ALL",
              "--security-opt", "no-new-privileges"]


def sh(*args, check=True, timeout=600, **kw) -> subprocess.CompletedProcess:
    r = subprocess.run(list(args), capture_output=True, text=True, timeout=timeout, **kw)
    if check and r.returncode != 0:
        raise AssertionError(f"{' '.join(args)} -> {r.returncode}\n{r.stdout[-3000:]}\n{r.stderr[-3000:]}")
    return r


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def semforge(*args) -> subprocess.CompletedProcess:
    return sh(str(ROOT / ".venv/bin/semforge"), *args)


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    if shutil.which("docker") is None or sh("docker", "info", check=False).returncode != 0:
        pytest.fail("no Docker engine answers: run `make test-deploy` (installs docker.io, starts dockerd)")
    if sh("docker", "image", "inspect", IMAGE, check=False).returncode != 0:
        pytest.fail(f"image {IMAGE} missing: `make images` builds it")
    ctx = tmp_path_factory.mktemp("s3img")
    shutil.copy(ROOT / "services/images/s3test/Dockerfile", ctx / "Dockerfile")
    shutil.copy(shutil.which("rclone", path=str(ROOT / ".venv/bin")) or shutil.which("rclone"), ctx / "rclone")
    sh("docker", "build", "-q", "-t", S3_IMAGE, str(ctx))
    return IMAGE


@pytest.fixture(scope="module")
def reference(sample_tiff, tmp_path_factory):
    """The in-process analysis of the sample image."""
    out = tmp_path_factory.mktemp("inprocess")
    semforge("analyze", str(sample_tiff[0]), "--out", str(out), "--quiet")
    return out


def test_image_runs_as_non_root_and_ships_the_models(images):
    user = sh("docker", "image", "inspect", "--format", "{{.Config.User}}", images).stdout.strip()
    assert user == "10001:10001"
    r = sh("docker", "run", "--rm", *SECURE_RUN, images, "python", "-c",
           "import os, semforge, semforge.inference as i; print(os.getuid(), i.model_dir('semforge_unetpp_se'))")
    uid, model = r.stdout.split()
    assert uid == "10001" and model.startswith("/opt/venv/lib/python3.11/site-packages/semforge/models_repo/")
    r = sh("docker", "run", "--rm", *SECURE_RUN, images, "semforge", "--version")
    assert r.stdout.strip().startswith("semforge ")
    r = sh("docker", "run", "--rm", *SECURE_RUN, images, "sh", "-c", "touch /opt/x", check=False)
    assert r.returncode != 0  # read-only root filesystem


def test_scale_bar_ocr_works_in_the_cpu_image(images, tmp_path):
    """Tesseract (Debian tesseract-ocr in the CPU base image) reads a Zeiss-style scale bar label inside the
    container, as uid 10001 with a read-only root: the calibration check works in the cluster too."""
    import os

    import matplotlib
    import numpy as np
    import tifffile
    from PIL import Image, ImageDraw, ImageFont

    w, h, bar_h, bar_px = 900, 700, 70, 100
    img = np.clip(np.random.default_rng(0).normal(110, 30, (h, w)), 0, 255).astype(np.uint8)
    band = Image.new("L", (w, bar_h), 0)
    d = ImageDraw.Draw(band)
    font = ImageFont.truetype(os.path.join(matplotlib.get_data_path(), "fonts", "ttf", "DejaVuSans.ttf"), 14)
    d.text((10, 12), "EHT = 5.00 kV", fill=255, font=font)
    x0, y = w - bar_px - 80, 50
    d.rectangle([x0 - 1, y - 10, x0, y + 10], fill=255)
    d.rectangle([x0 + bar_px - 1, y - 10, x0 + bar_px, y + 10], fill=255)
    d.rectangle([x0, y - 1, x0 + bar_px, y], fill=255)
    d.text((x0 + bar_px / 2 - d.textlength("500 nm", font=font) / 2, 14), "500 nm", fill=255, font=font)
    img[h - bar_h:] = np.asarray(band)
    tifffile.imwrite(tmp_path / "bar.tif", img)
    os.chmod(tmp_path, 0o755)
    os.chmod(tmp_path / "bar.tif", 0o644)
    r = sh("docker", "run", "--rm", *SECURE_RUN, "-v", f"{tmp_path}:/data:ro", images, "python", "-c",
           "import tifffile; from semforge.analysis import read_scale_bar; "
           f"b = read_scale_bar(tifffile.imread('/data/bar.tif'), {h - bar_h}); print(b.label, b.length_nm)")
    assert r.stdout.split() == ["500", "nm", "500.0"], r.stdout + r.stderr


def test_services_as_containers_on_a_private_network(images, reference, sample_tiff, tmp_path):
    tag = uuid.uuid4().hex[:8]
    net, names = f"semforge-e2e-{tag}", []
    store = ["-e", "SEMFORGE_STORE=s3://semforge", "-e", f"S3_ENDPOINT=s3-{tag}:9000",
             "-e", f"S3_ACCESS_KEY={KEY}", "-e", f"S3_SECRET_KEY={SECRET}"]

    def run(name, *args):
        names.append(name)
        sh("docker", "run", "-d", "--name", name, "--network", net, *args)

    sh("docker", "network", "create", net)
    try:
        run(f"s3-{tag}", "--read-only", "--tmpfs", "/data:uid=10001,gid=10001", S3_IMAGE, "serve", "s3",
            "--addr", ":9000", "--auth-key", f"{KEY},{SECRET}", "--etag-hash", "MD5", "--config", "/dev/null", "/data")
        for s in ("segment", "measure", "classify"):
            run(f"{s}-{tag}", *SECURE_RUN, *store, images, "python", "-m", f"semforge_{s}.server")
        run(f"gateway-{tag}", *SECURE_RUN, *store, "-e", f"SEGMENT_ADDR=segment-{tag}:50051",
            "-e", f"MEASURE_ADDR=measure-{tag}:50051", "-e", f"CLASSIFY_ADDR=classify-{tag}:50051",
            "-p", "127.0.0.1::50051", images, "python", "-m", "semforge_gateway.server")
        port = sh("docker", "port", f"gateway-{tag}", "50051").stdout.split(":")[-1].strip()
        out = tmp_path / "remote"
        r = semforge("analyze", str(sample_tiff[0]), "--out", str(out), "--server", f"127.0.0.1:{port}",
                     "--wait", "120", "--quiet")
        assert "report:" in r.stdout
        assert_same_results(reference, out)
    finally:
        logs = {n: sh("docker", "logs", "--tail", "20", n, check=False).stderr for n in names}
        sh("docker", "rm", "-f", *names, check=False)
        sh("docker", "network", "rm", net, check=False)
    assert all("Traceback" not in v for v in logs.values()), logs


def _podman_has(image: str) -> bool:
    want = sh("docker", "image", "inspect", "--format", "{{.Id}}", image).stdout.strip().removeprefix("sha256:")
    r = sh("podman", "image", "inspect", "--format", "{{.Id}}", f"localhost/{image}", check=False)
    return r.returncode == 0 and r.stdout.strip() == want


def test_rendered_chart_runs_under_podman_kube_play(images, reference, sample_tiff, tmp_path):
    if shutil.which("podman") is None:
        pytest.fail("podman missing: `make test-deploy` installs it")
    missing = [i for i in (images, S3_IMAGE) if not _podman_has(i)]
    if missing:  # images move from the Docker engine to podman without a registry
        save = subprocess.Popen(["docker", "save", *missing], stdout=subprocess.PIPE)
        sh("podman", "load", "-q", stdin=save.stdout)
        assert save.wait() == 0
    tag = uuid.uuid4().hex[:6]
    release, net, port = f"e2e{tag}", f"semforge-kube-{tag}", free_port()
    # the laptop scenario, with the store pointed at a real S3 server pod (no MinIO image can be pulled here)
    values = tmp_path / "podman-values.yaml"
    values.write_text(f"""image: {{repository: localhost/semforge-cpu, tag: latest, pullPolicy: Never}}
minio: {{enabled: false}}
store:
  external: {{enabled: true, endpoint: "s3-{tag}:9000", secure: false, accessKey: {KEY}, secretKey: {SECRET}}}
render: {{enabled: false}}
auth: {{gatewayMode: none}}
""")
    docs = documents(render([CHART / "ci/laptop-values.yaml", values], release=release).stdout)
    s3 = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": f"s3-{tag}"}, "spec": {
        "securityContext": {"runAsNonRoot": True, "runAsUser": 10001},
        "containers": [{"name": "s3", "image": f"localhost/{S3_IMAGE}", "args": [
            "serve", "s3", "--addr", ":9000", "--auth-key", f"{KEY},{SECRET}", "--etag-hash", "MD5",
            "--config", "/dev/null", "/data"], "volumeMounts": [{"name": f"s3-{tag}-data", "mountPath": "/data"}]}],
        "volumes": [{"name": f"s3-{tag}-data", "emptyDir": {}}]}}
    gateway = f"{release}-semforge-gateway"
    pods, skipped = to_podman(docs, publish={gateway: port}, extra_pods=[s3])
    assert {p["metadata"]["name"] for p in pods} == {f"s3-{tag}", gateway, *(f"{release}-semforge-{s}" for s in
                                                     ("segment", "measure", "classify"))}
    assert sorted(skipped) == [f"Secret/{release}-semforge-service", f"Secret/{release}-semforge-store"]
    import yaml

    play = tmp_path / "play.yaml"
    play.write_text(yaml.safe_dump_all(pods, sort_keys=False))
    sh("podman", "network", "create", net)
    try:
        sh("podman", "kube", "play", "--network", net, str(play))
        c = f"{gateway}-gateway"
        info = sh("podman", "inspect", c, "--format", "{{.Config.User}} {{.HostConfig.ReadonlyRootfs}}").stdout.split()
        assert info == ["10001:10001", "true"]
        out = tmp_path / "remote"
        semforge("analyze", str(sample_tiff[0]), "--out", str(out), "--server", f"127.0.0.1:{port}", "--wait", "120",
                 "--quiet")
        assert_same_results(reference, out)
    finally:
        logs = sh("podman", "logs", "--tail", "20", f"{gateway}-gateway", check=False)
        sh("podman", "kube", "down", str(play), check=False)
        sh("podman", "network", "rm", "-f", net, check=False)
    assert "Traceback" not in logs.stdout + logs.stderr


def test_batch_job_pod_spec_runs_under_podman(images, tmp_path):
    """The Indexed Job the batch code builds: its exact pod spec, one Pod per completion index (what the Job
    controller would create, with JOB_COMPLETION_INDEX set), run by podman over the project's image against a
    real S3 server; the report written from the store equals the in-process run."""
    pytest.importorskip("kubernetes")
    import copy

    import yaml

    from semforge.batch import build_indexed_job, submit_batch, write_batch_report
    from semforge.batch._backends import job_to_dict
    from semforge.storage import MinioStore
    from semforge.training.synth import synthetic_sem, write_zeiss_tiff

    for i in (images, S3_IMAGE):
        if not _podman_has(i):
            save = subprocess.Popen(["docker", "save", i], stdout=subprocess.PIPE)
            sh("podman", "load", "-q", stdin=save.stdout)
            assert save.wait() == 0
    src = tmp_path / "images"
    src.mkdir()
    for i in range(2):
        img, _ = synthetic_sem(seed=40 + i, n_particles=12, size=(384, 768))
        write_zeiss_tiff(src / f"b_{i}.tif", img, 2.5)
    ref = tmp_path / "inprocess"
    semforge("analyze", *map(str, sorted(src.glob("*.tif"))), "--out", str(ref), "--sample", "b", "--quiet")

    tag, port = uuid.uuid4().hex[:6], free_port()
    net = f"semforge-batch-{tag}"
    s3 = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": f"s3-{tag}"}, "spec": {
        "securityContext": {"runAsNonRoot": True, "runAsUser": 10001},
        "containers": [{"name": "s3", "image": f"localhost/{S3_IMAGE}", "args": [
            "serve", "s3", "--addr", ":9000", "--auth-key", f"{KEY},{SECRET}", "--etag-hash", "MD5",
            "--config", "/dev/null", "/data"], "ports": [{"containerPort": 9000, "hostPort": port, "hostIP": "127.0.0.1"}],
            "volumeMounts": [{"name": f"s3-{tag}-data", "mountPath": "/data"}]}],
        "volumes": [{"name": f"s3-{tag}-data", "emptyDir": {}}]}}
    sh("podman", "network", "create", net)
    s3_file = tmp_path / "s3.yaml"
    s3_file.write_text(yaml.safe_dump(s3))
    played = [s3_file]
    try:
        sh("podman", "kube", "play", "--network", net, str(s3_file))
        store = MinioStore(f"127.0.0.1:{port}", KEY, SECRET, "semforge")
        for _ in range(100):
            try:
                store.ping()
                break
            except Exception:  # noqa: BLE001 - the server is starting
                time.sleep(0.2)
        m = submit_batch(store, [str(src)], shards=2, name="b")
        env = [{"name": "SEMFORGE_STORE", "value": "s3://semforge"}, {"name": "S3_ENDPOINT", "value": f"s3-{tag}:9000"},
               {"name": "S3_ACCESS_KEY", "value": KEY}, {"name": "S3_SECRET_KEY", "value": SECRET}]
        job = job_to_dict(build_indexed_job(m, image=f"localhost/{images}", env=env))
        pods = []
        for index in range(job["spec"]["completions"]):
            spec = copy.deepcopy(job["spec"]["template"]["spec"])
            spec["containers"][0]["env"].append({"name": "JOB_COMPLETION_INDEX", "value": str(index)})
            for v in spec["volumes"]:  # podman shares emptyDirs by name across pods
                v.pop("emptyDir", None)
                v["emptyDir"] = {}
                old, v["name"] = v["name"], f"w{tag}-{index}-{v['name']}"
                for mnt in spec["containers"][0]["volumeMounts"]:
                    if mnt["name"] == old:
                        mnt["name"] = v["name"]
            pods.append({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": f"w{tag}-{index}",
                         "labels": job["spec"]["template"]["metadata"]["labels"]}, "spec": spec})
        workers = tmp_path / "workers.yaml"
        workers.write_text(yaml.safe_dump_all(pods))
        played.append(workers)
        sh("podman", "kube", "play", "--network", net, str(workers))
        codes = [sh("podman", "wait", f"w{tag}-{i}-worker", timeout=300).stdout.strip() for i in range(len(pods))]
        logs = [sh("podman", "logs", f"w{tag}-{i}-worker", check=False) for i in range(len(pods))]
        assert codes == ["0"] * len(pods), [lg.stdout + lg.stderr for lg in logs]
        out = tmp_path / "report"
        write_batch_report(store, m["id"], out, title="semforge report: b")
        assert_same_results(ref, out)
    finally:
        for f in reversed(played):
            sh("podman", "kube", "down", str(f), check=False)
        sh("podman", "network", "rm", "-f", net, check=False)


def test_render_image_renders_headless_as_non_root():
    """The Blender image (built by `make images`, not by test-deploy: 1.7 GB, ~13 min here)."""
    if sh("docker", "image", "inspect", "semforge-render:latest", check=False).returncode != 0:
        pytest.skip("semforge-render not built (make images IMAGES=render)")
    r = sh("docker", "run", "--rm", "--read-only", "--tmpfs", "/tmp:uid=10001,gid=10001,size=2g", "--cap-drop", "ALL",
           "--security-opt", "no-new-privileges", "semforge-render:latest", "sh", "-c",
           "semforge render --recipe tiny --out /tmp/r --workers 1 >/dev/null && id -u && "
           "ls /tmp/r/datasets/tiny-n60/scene_00001", timeout=900)
    uid, *files = r.stdout.split()
    assert uid == "10001"
    assert {"se.png", "transmission.png", "instances.tif", "height.tif", "scene.json"} <= set(files)
