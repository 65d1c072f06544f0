"""gateway service: the only service clients talk to; orchestrates segment -> measure -> classify -> report.

Job records live in the object store (``jobs/<id>/job.json``), so any
replica can report on, watch, cancel or resume any job. Images are passed to
the other services by object reference only.
"""

from __future__ import annotations

import datetime as _dt
import logging
import os
import queue
import tempfile
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import grpc
from google.protobuf import json_format

from semforge.analysis import (Calibration, ImageDecodeError, ImageResult, detect_databar, load_image,
                               to_gray_float, write_image_outputs, write_sample_report)
from semforge.classify.v1 import classify_pb2, classify_pb2_grpc
from semforge.common.v1 import common_pb2
from semforge.gateway.v1 import gateway_pb2, gateway_pb2_grpc
from semforge.measure.v1 import measure_pb2, measure_pb2_grpc
from semforge.analysis._probe import ImageTooLarge, check_image_limits
from semforge.rpc import (ServiceConfig, build_server, configure_logging, env_float, env_int, env_str,
                          map_exceptions, serve_forever)
from semforge.rpc._convert import (calibration_pb, get_array, get_json, measure_options, put_json, ref_pb)
from semforge.rpc._errors import abort
from semforge.security import service_channel
from semforge.segment.v1 import segment_pb2, segment_pb2_grpc
from semforge.storage import ObjectNotFound, ObjectStore, StorageUnavailable, open_store, validate_key

log = logging.getLogger("semforge.gateway")
S = common_pb2.JobState
TERMINAL = (S.JOB_STATE_SUCCEEDED, S.JOB_STATE_FAILED, S.JOB_STATE_CANCELLED)
STAGES = ("load", "segment", "measure", "classify")


def _now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="milliseconds")


def _age_s(ts: str) -> float:
    try:
        return (_dt.datetime.now(_dt.timezone.utc) - _dt.datetime.fromisoformat(ts)).total_seconds()
    except ValueError:
        return 1e9


@dataclass
class GatewayConfig(ServiceConfig):
    """Gateway settings: ``SEGMENT_ADDR``, ``MEASURE_ADDR``, ``CLASSIFY_ADDR`` (required), ``MAX_UPLOAD_MB``,
    ``MAX_MEGAPIXELS``, ``STORE_RETRY_S`` (how long a job waits for the store/services to come back),
    ``RESUME_AFTER_S`` (a job whose record is older than this, not finished, is resumed by any replica),
    ``JOB_WORKERS``."""

    segment_addr: str = ""
    measure_addr: str = ""
    classify_addr: str = ""
    max_upload_mb: int = 2048
    max_megapixels: float = 400.0
    store_retry_s: float = 300.0
    resume_after_s: float = 60.0
    job_workers: int = 2

    @classmethod
    def from_env(cls, **overrides):
        cfg = super().from_env()
        cfg.segment_addr = env_str("SEGMENT_ADDR", required=True)
        cfg.measure_addr = env_str("MEASURE_ADDR", required=True)
        cfg.classify_addr = env_str("CLASSIFY_ADDR", required=True)
        cfg.max_upload_mb = env_int("MAX_UPLOAD_MB", 2048, minimum=1)
        cfg.max_megapixels = env_float("MAX_MEGAPIXELS", 400.0, minimum=0.01)
        cfg.store_retry_s = env_float("STORE_RETRY_S", 300.0, minimum=0)
        cfg.resume_after_s = env_float("RESUME_AFTER_S", 60.0, minimum=1)
        cfg.job_workers = env_int("JOB_WORKERS", 2, minimum=1)
        for k, v in overrides.items():
            setattr(cfg, k, v)
        return cfg


@dataclass
class _LocalJob:
    events: list = field(default_factory=list)
    cond: threading.Condition = field(default_factory=threading.Condition)
    cancelled: bool = False
    done: bool = False


class _Cancelled(Exception):
    pass


class Orchestrator:
    """Runs analysis jobs: the pipeline over gRPC, job records in the store."""

    def __init__(self, store: ObjectStore, cfg: GatewayConfig):
        self.store = store
        self.cfg = cfg
        opts = [("grpc.max_receive_message_length", 64 << 20)]
        self.segment = segment_pb2_grpc.SegmentServiceStub(service_channel(cfg.segment_addr, cfg, options=opts))
        self.measure = measure_pb2_grpc.MeasureServiceStub(service_channel(cfg.measure_addr, cfg, options=opts))
        self.classify = classify_pb2_grpc.ClassifyServiceStub(service_channel(cfg.classify_addr, cfg, options=opts))
        self.replica = uuid.uuid4().hex[:8]
        self.local: dict[str, _LocalJob] = {}
        self.lock = threading.Lock()
        self.work: queue.Queue = queue.Queue()
        self.stopping = threading.Event()
        for i in range(cfg.job_workers):
            threading.Thread(target=self._worker, name=f"gateway-job-{i}", daemon=True).start()
        threading.Thread(target=self._resumer, name="gateway-resume", daemon=True).start()

    # -- job records ------------------------------------------------------------------
    @staticmethod
    def _job_key(job_id: str) -> str:
        return f"jobs/{validate_key(job_id)}/job.json"

    def save(self, job: common_pb2.Job) -> None:
        job.updated_at = _now()
        self.store.put_bytes(self._job_key(job.job_id), json_format.MessageToJson(job).encode())

    def load(self, job_id: str) -> common_pb2.Job:
        if not job_id:
            raise ValueError("job_id is empty")
        try:
            validate_key(job_id)
        except ValueError:
            raise ObjectNotFound(f"no job {job_id!r}") from None
        try:
            data = self.store.get_bytes(self._job_key(job_id))
        except ObjectNotFound:
            raise ObjectNotFound(f"no job {job_id!r}; list jobs with ListJobs") from None
        return json_format.Parse(data, common_pb2.Job())

    def list(self, limit: int) -> list[common_pb2.Job]:
        keys = [k for k in self.store.list("jobs/") if k.endswith("/job.json")]
        jobs = []
        for k in keys:
            try:
                jobs.append(json_format.Parse(self.store.get_bytes(k), common_pb2.Job()))
            except (ObjectNotFound, json_format.ParseError):
                continue
        jobs.sort(key=lambda j: j.created_at, reverse=True)
        return jobs[: limit or 100]

    # -- submission -------------------------------------------------------------------
    def create(self, req: gateway_pb2.AnalyzeRequest) -> common_pb2.Job:
        if not req.images:
            raise ValueError("no images given: upload images first and pass their references")
        measure_options(req.options)  # validates modality, separation, pixel size
        if req.options.specimen_rows < -1:
            raise ValueError(f"specimen_rows must be -1, 0 or a row count, got {req.options.specimen_rows}")
        if req.names and len(req.names) != len(req.images):
            raise ValueError(f"{len(req.names)} names for {len(req.images)} images")
        names = []
        for i, ref in enumerate(req.images):
            if not ref.key:
                raise ValueError(f"image {i}: empty object reference")
            validate_key(ref.key)
            if not self.store.exists(ref.key):
                raise ObjectNotFound(f"image {i}: no object {ref.key!r}; upload it first")
            name = req.names[i] if req.names else ""
            if not name:
                info = self._image_info(ref.key, create=True)
                name = info.get("name") or f"image{i + 1}"
            name = Path(name).name.rsplit(".", 1)[0] if "." in Path(name).name else Path(name).name
            validate_key(name)
            if name in names:
                name = f"{name}_{i + 1}"
            names.append(name)
        job = common_pb2.Job(job_id=uuid.uuid4().hex, state=S.JOB_STATE_QUEUED, created_at=_now(),
                             images_total=len(req.images), sample=req.sample or "sample")
        job.inputs.extend(req.images)
        job.input_names.extend(names)
        job.options.CopyFrom(req.options)
        self.save(job)
        with self.lock:
            self.local[job.job_id] = _LocalJob()
        self._emit(job, -1, "", "queued", 0.0, "queued")
        self.work.put(job.job_id)
        return job

    def cancel(self, job_id: str) -> common_pb2.Job:
        job = self.load(job_id)
        if job.state in TERMINAL:
            return job
        with self.lock:
            lj = self.local.get(job_id)
        if lj:
            lj.cancelled = True
        job.state = S.JOB_STATE_CANCELLED
        job.message = "cancelled by request"
        self.save(job)
        return job

    # -- events -----------------------------------------------------------------------
    def _emit(self, job, index, name, stage, fraction, message=""):
        ev = common_pb2.ProgressEvent(job_id=job.job_id, image_index=index, image_name=name, stage=stage,
                                      fraction=fraction, message=message, state=job.state)
        with self.lock:
            lj = self.local.get(job.job_id)
        if lj:
            with lj.cond:
                lj.events.append(ev)
                lj.cond.notify_all()

    def events(self, job_id: str, context) -> "iter":
        """Progress events of a job: live when this replica runs it, polled from the store otherwise."""
        with self.lock:
            lj = self.local.get(job_id)
        if lj is None:
            yield from self._poll_events(job_id, context)
            return
        i = 0
        while True:
            with lj.cond:
                while i >= len(lj.events) and not lj.done:
                    lj.cond.wait(0.5)
                    if context is not None and not context.is_active():
                        return
                batch = lj.events[i:]
                i = len(lj.events)
                finished = lj.done and i >= len(lj.events)
            yield from batch
            if finished:
                return

    def _poll_events(self, job_id: str, context):
        last = None
        while context is None or context.is_active():
            job = self._retry(lambda: self.load(job_id), None, "read job")
            key = (job.state, job.images_done, job.message)
            if key != last:
                last = key
                frac = job.images_done / max(job.images_total, 1)
                yield common_pb2.ProgressEvent(job_id=job_id, image_index=job.images_done - 1, stage="status",
                                               fraction=frac, message=job.message, state=job.state)
            if job.state in TERMINAL:
                return
            time.sleep(0.3)

    # -- running ----------------------------------------------------------------------
    def _worker(self):
        while not self.stopping.is_set():
            try:
                job_id = self.work.get(timeout=0.5)
            except queue.Empty:
                continue
            try:
                self.run(job_id)
            except Exception:  # noqa: BLE001 - a job failure must never kill the worker
                log.exception("job %s crashed", job_id)

    def _resumer(self):
        """Pick up unfinished jobs whose record has gone stale (their replica died)."""
        while not self.stopping.wait(max(1.0, self.cfg.resume_after_s / 4)):
            try:
                for job in self.list(1000):
                    if job.state in TERMINAL or _age_s(job.updated_at) < self.cfg.resume_after_s:
                        continue
                    with self.lock:
                        if job.job_id in self.local and not self.local[job.job_id].done:
                            continue
                        self.local[job.job_id] = _LocalJob()
                    log.info("resuming stale job %s", job.job_id, extra={"job_id": job.job_id})
                    self.work.put(job.job_id)
            except StorageUnavailable:
                continue
            except Exception:  # noqa: BLE001
                log.exception("resume scan failed")

    def _retry(self, fn, job, what):
        """Call ``fn``; while the store or a service is unavailable, wait and retry (up to STORE_RETRY_S)."""
        deadline = time.monotonic() + self.cfg.store_retry_s
        delay = 0.2
        warned = False
        while True:
            try:
                return fn()
            except (StorageUnavailable, grpc.RpcError) as exc:
                if isinstance(exc, grpc.RpcError) and exc.code() not in (grpc.StatusCode.UNAVAILABLE,):
                    raise
                if time.monotonic() > deadline:
                    raise
                if job is not None and not warned:
                    self._emit(job, -1, "", "waiting", job.images_done / max(job.images_total, 1),
                               f"{what}: {exc.details() if isinstance(exc, grpc.RpcError) else exc}; retrying")
                    warned = True
                time.sleep(delay)
                delay = min(delay * 2, 5.0)
            if job is not None:
                self._check_cancel(job)

    def _check_cancel(self, job, *, stored: bool = True):
        with self.lock:
            lj = self.local.get(job.job_id)
        if lj and lj.cancelled:
            raise _Cancelled()
        if not stored:
            return
        try:
            stored = self.load(job.job_id)
        except StorageUnavailable:
            return
        if stored.state == S.JOB_STATE_CANCELLED:
            raise _Cancelled()

    def _image_info(self, key: str, *, create: bool) -> dict:
        sha = key.rsplit("/", 1)[-1]
        ikey = f"images/{sha}.json"
        try:
            return get_json(self.store, ikey)
        except ObjectNotFound:
            if not create:
                raise
        img = load_image(self.store.get_bytes(key), name=key)
        info = {"name": "", "width": int(img.pixels.shape[1]), "height": int(img.pixels.shape[0]),
                "format": img.format, "pixel_size_nm": img.calibration.pixel_size_nm,
                "calibration_source": img.calibration.source, "specimen_rows": detect_databar(img.pixels)}
        put_json(self.store, info, ikey)
        return info

    def run(self, job_id: str) -> None:
        job = self._retry(lambda: self.load(job_id), None, "read job")
        if job.state in TERMINAL:
            self._finish_local(job)
            return
        try:
            job.state = S.JOB_STATE_RUNNING
            self._retry(lambda: self.save(job), job, "save job")
            n = len(job.inputs)
            for i, (ref, name) in enumerate(zip(job.inputs, job.input_names)):
                if f"_state/{name}/particles.json" in job.outputs:
                    continue  # finished before a restart
                self._run_image(job, i, n, ref, name)
                job.images_done = i + 1
                self._retry(lambda: self.save(job), job, "save job")
            self._check_cancel(job)
            self._emit(job, n - 1, "", "report", 0.95, "writing the sample report")
            self._retry(lambda: self._report(job), job, "report")
            job.state = S.JOB_STATE_SUCCEEDED
            job.message = f"{n} image(s) analysed"
        except _Cancelled:
            job.state = S.JOB_STATE_CANCELLED
            job.message = "cancelled by request"
        except grpc.RpcError as exc:
            job.state = S.JOB_STATE_FAILED
            job.message = f"{exc.code().name}: {exc.details()}"
        except (ImageDecodeError, ValueError, ObjectNotFound) as exc:
            job.state = S.JOB_STATE_FAILED
            job.message = str(exc)
        except StorageUnavailable as exc:
            job.state = S.JOB_STATE_FAILED
            job.message = f"object store unavailable for longer than {self.cfg.store_retry_s:.0f} s: {exc}"
        except Exception as exc:  # noqa: BLE001
            log.exception("job %s failed", job.job_id)
            job.state = S.JOB_STATE_FAILED
            job.message = f"internal error: {type(exc).__name__}"
        try:
            self._retry(lambda: self.save(job), None, "save job")
        except Exception:  # noqa: BLE001
            log.exception("could not save final state of job %s", job.job_id)
        self._emit(job, len(job.inputs) - 1, "", "done", 1.0, job.message)
        self._finish_local(job)

    def _finish_local(self, job):
        with self.lock:
            lj = self.local.get(job.job_id)
        if lj:
            with lj.cond:
                lj.done = True
                lj.cond.notify_all()

    def _run_image(self, job, i, n, ref, name):
        base = i / n
        step = 1.0 / n / len(STAGES)
        o = job.options
        self._check_cancel(job)
        self._emit(job, i, name, "load", base, "reading calibration and data bar")
        info = self._retry(lambda: self._image_info(ref.key, create=True), job, "load")
        if o.pixel_size_nm > 0:
            cal = Calibration(o.pixel_size_nm, "user")
        else:
            cal = Calibration(info.get("pixel_size_nm"), info.get("calibration_source") or "none")
        rows = info["height"] if o.specimen_rows == -1 else (o.specimen_rows or info["specimen_rows"])
        if not 0 < rows <= info["height"]:
            raise ValueError(f"specimen_rows must be in 1..{info['height']} for image {name}, got {rows}")
        self._check_cancel(job, stored=False)
        self._emit(job, i, name, "segment", base + step, "segmenting")
        seg = self._retry(lambda: self.segment.Segment(segment_pb2.SegmentRequest(
            image=ref, modality=o.modality, specimen_rows=rows, model=o.segmenter)), job, "segment")
        self._check_cancel(job, stored=False)
        self._emit(job, i, name, "measure", base + 2 * step, "separating and measuring particles")
        mes = self._retry(lambda: self.measure.Measure(measure_pb2.MeasureRequest(
            mask=seg.mask, image_name=name, calibration=calibration_pb(cal), specimen_rows=rows, options=o)),
            job, "measure")
        self._check_cancel(job, stored=False)
        self._emit(job, i, name, "classify", base + 3 * step, f"{mes.count} particles, classifying shapes")
        cls = self._retry(lambda: self.classify.Classify(classify_pb2.ClassifyRequest(
            particles=mes.particles, image=ref, labels=mes.labels, modality=o.modality)), job, "classify")
        job.outputs[f"_state/{name}/particles.json"].CopyFrom(cls.particles)
        job.outputs[f"_state/{name}/labels.tif"].CopyFrom(mes.labels)
        self._emit(job, i, name, "image_done", (i + 1) / n * 0.95, f"{mes.included} of {mes.count} particles measured")

    def _report(self, job):
        from semforge.analysis import MeasureOptions

        o = job.options
        results = []
        with tempfile.TemporaryDirectory(prefix="semforge-report-") as tmp:
            out = Path(tmp)
            for ref, name in zip(job.inputs, job.input_names):
                doc = get_json(self.store, job.outputs[f"_state/{name}/particles.json"].key)
                labels = get_array(self.store, job.outputs[f"_state/{name}/labels.tif"].key)
                cal = doc["calibration"]
                res = ImageResult(name=name, labels=labels.astype("uint32"), particles=doc["particles"],
                                  calibration=Calibration(cal["pixel_size_nm"], cal["source"]),
                                  specimen_rows=doc["specimen_rows"],
                                  options=MeasureOptions(separate=doc["separation"],
                                                         modality=measure_options(o).modality))
                gray = to_gray_float(load_image(self.store.get_bytes(ref.key), name=name).pixels)
                # labels.tif is the measure service's object already (same format): no re-encoding
                write_image_outputs(res, gray, out / name, write_labels=False)
                job.outputs[f"{name}/labels.tif"].CopyFrom(job.outputs[f"_state/{name}/labels.tif"])
                results.append(res)
            write_sample_report(results, out, title=f"semforge report: {job.sample}")
            for path in sorted(out.rglob("*")):
                if path.is_file():
                    rel = path.relative_to(out).as_posix()
                    info = self.store.put_file(f"jobs/{job.job_id}/report/{rel}", path)
                    job.outputs[rel].CopyFrom(ref_pb(info))

    def ready(self) -> bool:
        self.store.ping()
        from grpc_health.v1 import health_pb2, health_pb2_grpc

        for addr in (self.cfg.segment_addr, self.cfg.measure_addr, self.cfg.classify_addr):
            with service_channel(addr, self.cfg) as ch:
                r = health_pb2_grpc.HealthStub(ch).Check(health_pb2.HealthCheckRequest(), timeout=1.0)
                if r.status != health_pb2.HealthCheckResponse.SERVING:
                    return False
        return True


class GatewayServicer(gateway_pb2_grpc.GatewayServiceServicer):
    def __init__(self, store: ObjectStore, orch: Orchestrator, cfg: GatewayConfig):
        self.store, self.orch, self.cfg = store, orch, cfg

    @map_exceptions
    def Upload(self, request_iterator, context):
        first = {}
        limit = self.cfg.max_upload_mb * 1024 * 1024

        def chunks():
            for msg in request_iterator:
                if not first:
                    first["name"] = msg.name
                    first["sha"] = msg.expected_sha256
                if msg.data:
                    yield msg.data

        try:
            info, dedup = self.store.put_content(chunks(), max_bytes=limit)
        except ValueError as exc:
            if "larger than the limit" in str(exc):
                abort(grpc.StatusCode.RESOURCE_EXHAUSTED,
                      f"upload exceeds the limit of {self.cfg.max_upload_mb} MB (MAX_UPLOAD_MB)")
            raise
        if info.size == 0:
            abort(grpc.StatusCode.INVALID_ARGUMENT, "empty upload (0 bytes): send the image file's contents")
        if first.get("sha") and first["sha"].lower() != info.sha256:
            if not dedup:
                self.store.delete(info.key)
            abort(grpc.StatusCode.INVALID_ARGUMENT,
                  f"sha256 mismatch: expected {first['sha']}, received {info.sha256} (data corrupted in transit?)")
        name = os.path.basename(first.get("name") or "") or "image"
        try:  # limits from the header, before any decode (#15); a rejected upload is never kept
            with self.store.open(info.key) as fh:
                check_image_limits(fh, max_pixels=self.cfg.max_megapixels * 1e6)
        except ImageTooLarge as exc:
            if not dedup:
                self.store.delete(info.key)
            abort(grpc.StatusCode.RESOURCE_EXHAUSTED, f"{name}: {exc} (MAX_MEGAPIXELS)")
        except ImageDecodeError:
            pass  # not a header we know: the decoder below gives the actionable message
        try:
            meta = self.orch._image_info(info.key, create=True)
        except ImageDecodeError as exc:
            if not dedup:
                self.store.delete(info.key)
            abort(grpc.StatusCode.INVALID_ARGUMENT, f"{name}: {str(exc).split(': ', 1)[-1]}")
        if meta["width"] * meta["height"] > self.cfg.max_megapixels * 1e6:
            if not dedup:
                self.store.delete(info.key)
            abort(grpc.StatusCode.RESOURCE_EXHAUSTED,
                  f"{name}: {meta['width']}x{meta['height']} px exceeds MAX_MEGAPIXELS={self.cfg.max_megapixels}")
        if not meta.get("name"):
            meta["name"] = name
            put_json(self.store, meta, f"images/{info.sha256}.json")
        ii = common_pb2.ImageInfo(ref=ref_pb(info, "application/octet-stream"), name=name, width=meta["width"],
                                  height=meta["height"], specimen_rows=meta["specimen_rows"], format=meta["format"],
                                  calibration=common_pb2.Calibration(pixel_size_nm=meta["pixel_size_nm"] or 0.0,
                                                                     source=meta["calibration_source"]))
        return gateway_pb2.UploadResponse(image=ii, deduplicated=dedup)

    @map_exceptions
    def Analyze(self, request, context):
        job = self.orch.create(request)
        for ev in self.orch.events(job.job_id, context):
            yield gateway_pb2.AnalyzeResponse(event=ev)
        yield gateway_pb2.AnalyzeResponse(job=self.orch.load(job.job_id))

    @map_exceptions
    def SubmitJob(self, request, context):
        return gateway_pb2.SubmitJobResponse(job=self.orch.create(request.request))

    @map_exceptions
    def GetJob(self, request, context):
        return gateway_pb2.GetJobResponse(job=self.orch.load(request.job_id))

    @map_exceptions
    def ListJobs(self, request, context):
        if request.limit < 0:
            raise ValueError(f"limit must be >= 0, got {request.limit}")
        return gateway_pb2.ListJobsResponse(jobs=self.orch.list(request.limit))

    @map_exceptions
    def CancelJob(self, request, context):
        return gateway_pb2.CancelJobResponse(job=self.orch.cancel(request.job_id))

    @map_exceptions
    def WatchJob(self, request, context):
        self.orch.load(request.job_id)
        for ev in self.orch.events(request.job_id, context):
            yield gateway_pb2.WatchJobResponse(event=ev)
        yield gateway_pb2.WatchJobResponse(job=self.orch.load(request.job_id))

    @map_exceptions
    def Download(self, request, context):
        if request.job_id:
            job = self.orch.load(request.job_id)
            if request.name not in job.outputs or request.name.startswith("_state/"):
                names = sorted(k for k in job.outputs if not k.startswith("_state/"))
                if job.state != S.JOB_STATE_SUCCEEDED:
                    raise ObjectNotFound(f"job {job.job_id} has no report yet (state "
                                         f"{S.Name(job.state)}); wait for it to finish")
                raise ObjectNotFound(f"job {job.job_id} has no output {request.name!r}; available: {', '.join(names)}")
            key = job.outputs[request.name].key
        elif request.ref.key:
            key = validate_key(request.ref.key)
        else:
            raise ValueError("give a job_id and output name, or an object reference")
        total = self.store.stat(key).size
        for chunk in self.store.iter_chunks(key, 1 << 20):
            yield gateway_pb2.DownloadResponse(data=chunk, total_bytes=total)


def register(store: ObjectStore, cfg: GatewayConfig):
    orch = Orchestrator(store, cfg)

    def add(server: grpc.Server):
        gateway_pb2_grpc.add_GatewayServiceServicer_to_server(GatewayServicer(store, orch, cfg), server)
        return [gateway_pb2.DESCRIPTOR.services_by_name["GatewayService"].full_name]
    return add, orch


def main() -> None:
    configure_logging()
    cfg = GatewayConfig.from_env()
    store = open_store(cfg.store)
    add, orch = register(store, cfg)
    srv = build_server("gateway", add, cfg, ready_check=orch.ready)
    serve_forever([srv], cfg.grace_s)
    orch.stopping.set()


if __name__ == "__main__":
    main()
