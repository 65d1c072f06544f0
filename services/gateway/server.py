"""gateway service: the only service clients talk to. A thin gRPC adapter: uploads go to the object store,
analyses run as jobs of :class:`semforge.jobs.JobRunner` on the pipeline's remote stages
(:class:`semforge.rpc.stages.RemoteStages`: segment -> measure -> classify -> report services, images by
object reference). Job records live in the store, so any replica can report on, watch, cancel or resume
any job.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass

import grpc

from semforge.analysis import ImageDecodeError
from semforge.analysis._probe import ImageTooLarge, check_image_limits
from semforge.common.v1 import common_pb2
from semforge.errors import ObjectTooLarge, UserInputError
from semforge.gateway.v1 import gateway_pb2, gateway_pb2_grpc
from semforge.jobs import JobRunner
from semforge.jobs.tenancy import no_object, owns_upload, record_upload, tenant_of
from semforge.jobs.refs import drop_upload, upload_pin
from semforge.rpc import (ServiceConfig, build_server, configure_logging, env_float, env_int, env_str,
                          map_exceptions, serve_forever)
from semforge.rpc.convert import analysis_options_from_pb, calibration_pb, facts_key, put_facts, ref_pb
from semforge.rpc.stages import RemoteStages, ServiceStubs, image_facts
from semforge.security import current_identity, service_channel
from semforge.storage import BLOB_PREFIX, ObjectNotFound, ObjectStore, open_store, validate_key

from .batch import BatchConfig, BatchRpcs, BatchService
from .follow import follow

log = logging.getLogger("semforge.gateway")


@dataclass
class GatewayConfig(ServiceConfig):
    """Gateway settings: ``SEGMENT_ADDR``, ``MEASURE_ADDR``, ``CLASSIFY_ADDR`` (required), ``MAX_UPLOAD_MB``,
    ``MAX_MEGAPIXELS``, ``STORE_RETRY_S`` (how long a job waits for the store/services to come back),
    ``RESUME_AFTER_S`` (a job silent for longer than this, not finished, is resumed by one other replica),
    ``JOB_WORKERS``, ``CALL_TIMEOUT_S`` (deadline of each call to segment/measure/classify: a hung service
    fails the job with DEADLINE_EXCEEDED instead of stalling it), ``JOB_RETENTION_DAYS`` /
    ``JOB_RETENTION_MAX_PER_TENANT`` (finished jobs older than that, or beyond the newest N of a tenant, are
    deleted; 0 = keep), ``MAX_ACTIVE_JOBS_PER_TENANT`` (a tenant with this many jobs queued or running gets
    RESOURCE_EXHAUSTED + retry hint for a new one; 0 = no limit)."""

    segment_addr: str = ""
    measure_addr: str = ""
    classify_addr: str = ""
    max_upload_mb: int = 2048
    max_megapixels: float = 180.0  # measured to process end to end (docs/security.md, MAX_MEGAPIXELS)
    store_retry_s: float = 300.0
    resume_after_s: float = 60.0
    job_workers: int = 2
    call_timeout_s: float = 600.0
    retention_days: float = 0.0
    retention_max_jobs: int = 0
    max_active_jobs_per_tenant: int = 0

    @classmethod
    def from_env(cls, **overrides):
        cfg = super().from_env()
        cfg.segment_addr = env_str("SEGMENT_ADDR", required=True)
        cfg.measure_addr = env_str("MEASURE_ADDR", required=True)
        cfg.classify_addr = env_str("CLASSIFY_ADDR", required=True)
        cfg.max_upload_mb = env_int("MAX_UPLOAD_MB", 2048, minimum=1)
        cfg.max_megapixels = env_float("MAX_MEGAPIXELS", 180.0, minimum=0.01)
        cfg.store_retry_s = env_float("STORE_RETRY_S", 300.0, minimum=0)
        cfg.resume_after_s = env_float("RESUME_AFTER_S", 60.0, minimum=1)
        cfg.job_workers = env_int("JOB_WORKERS", 2, minimum=1)
        cfg.call_timeout_s = env_float("CALL_TIMEOUT_S", 600.0, minimum=0.1)
        cfg.retention_days = env_float("JOB_RETENTION_DAYS", 0.0, minimum=0)
        cfg.retention_max_jobs = env_int("JOB_RETENTION_MAX_PER_TENANT", 0, minimum=0)
        cfg.max_active_jobs_per_tenant = env_int("MAX_ACTIVE_JOBS_PER_TENANT", 0, minimum=0)
        for k, v in overrides.items():
            setattr(cfg, k, v)
        return cfg


def _unavailable(exc: BaseException) -> bool:
    """A downstream failure worth waiting out: UNAVAILABLE, or RESOURCE_EXHAUSTED that carries a retry hint
    (the store's disk is full; a size limit carries none)."""
    if not isinstance(exc, grpc.RpcError):
        return False
    if exc.code() == grpc.StatusCode.RESOURCE_EXHAUSTED:
        from semforge.rpc._limits import retry_after_ms

        return retry_after_ms(exc) is not None
    return exc.code() == grpc.StatusCode.UNAVAILABLE


def _not_found(exc: BaseException) -> bool:
    return isinstance(exc, grpc.RpcError) and exc.code() == grpc.StatusCode.NOT_FOUND


def _describe(exc: BaseException, call_timeout_s: float | None = None) -> str | None:
    if not isinstance(exc, grpc.RpcError):
        return None
    if exc.code() == grpc.StatusCode.DEADLINE_EXCEEDED and call_timeout_s:
        return (f"DEADLINE_EXCEEDED: a service behind the gateway did not answer within CALL_TIMEOUT_S="
                f"{call_timeout_s:g} s (hung or overloaded?); submit the job again once it answers")
    return f"{exc.code().name}: {exc.details()}"


def job_runner(store: ObjectStore, cfg: GatewayConfig) -> JobRunner:
    stubs = ServiceStubs.connect(cfg.segment_addr, cfg.measure_addr, cfg.classify_addr, timeout_s=cfg.call_timeout_s,
                                 channel=lambda addr, options: service_channel(addr, cfg, options=options))
    return JobRunner(store, lambda job: RemoteStages(store, stubs, output_prefix=f"jobs/{job.job_id}/report/"),
                     options_of=analysis_options_from_pb, name_of=lambda ref: image_facts(store, ref.key)[1],
                     transient=_unavailable, describe=lambda exc: _describe(exc, cfg.call_timeout_s),
                     missing=_not_found, workers=cfg.job_workers,
                     resume_after_s=cfg.resume_after_s, retry_s=cfg.store_retry_s,
                     retention_days=cfg.retention_days, retention_max_jobs=cfg.retention_max_jobs,
                     max_active_per_tenant=cfg.max_active_jobs_per_tenant)


class GatewayServicer(BatchRpcs, gateway_pb2_grpc.GatewayServiceServicer):
    def __init__(self, store: ObjectStore, runner: JobRunner, cfg: GatewayConfig):
        self.store, self.runner, self.cfg = store, runner, cfg
        # batch RPCs (#12, services/gateway/batch.py over semforge.batch.BatchService); their drivers stop with the
        # job runner (SIGTERM)
        self.batches = BatchService(store, BatchConfig.from_env(store, cfg.store), runner.stopping,
                                    options_of=analysis_options_from_pb)

    @map_exceptions
    def Upload(self, request_iterator, context):
        first = {}

        def chunks():
            for msg in request_iterator:
                if not first:
                    first["name"], first["sha"] = msg.name, msg.expected_sha256
                if msg.data:
                    yield msg.data

        try:
            info, dedup = self.store.put_content(chunks(), max_bytes=self.cfg.max_upload_mb << 20)
        except ObjectTooLarge:
            raise ObjectTooLarge(f"upload exceeds the limit of {self.cfg.max_upload_mb} MB (MAX_UPLOAD_MB)",
                                 field="data") from None
        name = os.path.basename(first.get("name") or "") or "image"
        tenant = tenant_of(current_identity())
        pin = upload_pin(self.store, tenant, info.key)  # a concurrent DeleteJob keeps these bytes (jobs.refs)
        try:
            return self._uploaded(info, dedup, name, first, tenant)
        finally:
            drop_upload(self.store, tenant, info.key, pin)

    def _uploaded(self, info, dedup, name, first, tenant):
        try:
            if info.size == 0:
                raise UserInputError("empty upload (0 bytes): send the image file's contents", field="data")
            if first.get("sha") and first["sha"].lower() != info.sha256:
                raise UserInputError(f"sha256 mismatch: expected {first['sha']}, received {info.sha256} "
                                     "(data corrupted in transit?)", field="expected_sha256")
            try:  # limits from the header, before any decode (#15)
                with self.store.open(info.key) as fh:
                    check_image_limits(fh, max_pixels=self.cfg.max_megapixels * 1e6)
            except ImageTooLarge as exc:
                raise ObjectTooLarge(f"{name}: {exc} (MAX_MEGAPIXELS)", field="data") from None
            except ImageDecodeError:
                pass  # not a header we know: the decoder below gives the actionable message
            try:
                facts, known = image_facts(self.store, info.key, name=name)  # decoded once, here, ever
            except ValueError as exc:  # ImageDecodeError: say which upload
                raise UserInputError(f"{name}: {exc}", field="data") from None
            if facts.width * facts.height > self.cfg.max_megapixels * 1e6:
                raise ObjectTooLarge(f"{name}: {facts.width}x{facts.height} px exceeds MAX_MEGAPIXELS="
                                     f"{self.cfg.max_megapixels}", field="data")
        except UserInputError:  # ObjectTooLarge too: a rejected upload is never kept
            if not dedup:
                self.store.delete(info.key)
            raise
        if not known:
            put_facts(self.store, info.key, facts, name)
        # dedup as this tenant sees it: only its own earlier upload counts (the shared blob tells it nothing)
        dedup = record_upload(self.store, tenant, info.key, name) and dedup
        image = common_pb2.ImageInfo(ref=ref_pb(info, "application/octet-stream"), name=name, width=facts.width,
                                     height=facts.height, specimen_rows=facts.detected_rows, format=facts.format,
                                     calibration=calibration_pb(facts.calibration))
        return gateway_pb2.UploadResponse(image=image, deduplicated=dedup)

    def _create(self, req):
        return self.runner.create(list(req.images), list(req.names), req.options, req.sample,
                                  identity=current_identity())

    @map_exceptions
    def Analyze(self, request, context):
        job = self._create(request)
        for ev in follow(self.runner, job.job_id, context, current_identity()):  # (#12: across a drain)
            yield gateway_pb2.AnalyzeResponse(event=ev)
        yield gateway_pb2.AnalyzeResponse(job=self.runner.get(job.job_id, current_identity()))

    @map_exceptions
    def SubmitJob(self, request, context):
        return gateway_pb2.SubmitJobResponse(job=self._create(request.request))

    @map_exceptions
    def GetJob(self, request, context):
        return gateway_pb2.GetJobResponse(job=self.runner.get(request.job_id, current_identity()))

    @map_exceptions
    def ListJobs(self, request, context):
        if request.limit < 0:
            raise UserInputError(f"limit must be >= 0, got {request.limit}", field="limit")
        jobs, token = self.runner.jobs.page(current_identity(), request.page_size or request.limit,
                                            request.page_token)
        return gateway_pb2.ListJobsResponse(jobs=jobs, next_page_token=token)

    @map_exceptions
    def DeleteJob(self, request, context):
        n = self.runner.delete(request.job_id, current_identity())
        return gateway_pb2.DeleteJobResponse(job_id=request.job_id, objects_deleted=n)

    @map_exceptions
    def CancelJob(self, request, context):
        return gateway_pb2.CancelJobResponse(job=self.runner.cancel(request.job_id, current_identity()))

    @map_exceptions
    def WatchJob(self, request, context):
        ident = current_identity()
        self.runner.get(request.job_id, ident)
        for ev in follow(self.runner, request.job_id, context, ident):
            yield gateway_pb2.WatchJobResponse(event=ev)
        yield gateway_pb2.WatchJobResponse(job=self.runner.get(request.job_id, ident))

    def _ref_key(self, key: str, ident) -> str:
        """The key of a Download by reference, if the caller may have it: its own upload (content addressed:
        through its ownership record) or a report file of a job it may see. Everything else -- another
        tenant's upload, job records, per-image state, internal objects -- is NOT_FOUND, like a missing key."""
        key = validate_key(key)
        if key.startswith(BLOB_PREFIX):
            # an upload (it has its facts record; masks, label images and tables do not) that is the caller's
            if (owns_upload(self.store, ident, key) and self.store.exists(facts_key(key))
                    and self.store.exists(key)):
                return key
            raise no_object(key)
        parts = key.split("/")
        if len(parts) >= 4 and parts[0] == "jobs" and parts[2] == "report":
            try:
                job = self.runner.get(parts[1], ident)
            except (UserInputError, ObjectNotFound):
                raise no_object(key) from None
            if any(v.key == key for n, v in job.outputs.items() if not n.startswith("_state/")):
                return key
        raise no_object(key)

    @map_exceptions
    def Download(self, request, context):
        ident = current_identity()
        if request.job_id:
            job = self.runner.get(request.job_id, ident)
            if request.name not in job.outputs or request.name.startswith("_state/"):
                names = sorted(k for k in job.outputs if not k.startswith("_state/"))
                if job.state != common_pb2.JOB_STATE_SUCCEEDED:
                    raise ObjectNotFound(f"job {job.job_id} has no report yet (state "
                                         f"{common_pb2.JobState.Name(job.state)}); wait for it to finish")
                raise ObjectNotFound(f"job {job.job_id} has no output {request.name!r}; available: {', '.join(names)}")
            key = job.outputs[request.name].key
        elif request.batch_id:  # a batch report file (#12)
            key = self.batches.output_key(request.batch_id, request.name, identity=ident)
        elif request.ref.key:
            key = self._ref_key(request.ref.key, ident)
        else:
            raise UserInputError("give a job_id and output name, or an object reference", field="job_id")
        total = self.store.stat(key).size
        for chunk in self.store.iter_chunks(key, 1 << 20):
            yield gateway_pb2.DownloadResponse(data=chunk, total_bytes=total)


def ready(store: ObjectStore, cfg: GatewayConfig) -> bool:
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    store.ping()
    for addr in (cfg.segment_addr, cfg.measure_addr, cfg.classify_addr):
        with service_channel(addr, cfg) as ch:
            r = health_pb2_grpc.HealthStub(ch).Check(health_pb2.HealthCheckRequest(), timeout=1.0)
            if r.status != health_pb2.HealthCheckResponse.SERVING:
                return False
    return True


def register(store: ObjectStore, cfg: GatewayConfig):
    """(add-to-server function, started job runner); the caller closes the runner."""
    runner = job_runner(store, cfg).start()

    def add(server: grpc.Server):
        gateway_pb2_grpc.add_GatewayServiceServicer_to_server(GatewayServicer(store, runner, cfg), server)
        return [gateway_pb2.DESCRIPTOR.services_by_name["GatewayService"].full_name]
    return add, runner


def main() -> None:
    configure_logging()
    cfg = GatewayConfig.from_env()
    store = open_store(cfg.store)
    add, runner = register(store, cfg)
    srv = build_server("gateway", add, cfg, ready_check=lambda: ready(store, cfg))
    serve_forever([srv], cfg.grace_s, on_stop=runner.release)  # SIGTERM: other replicas resume our jobs now
    runner.close(cfg.grace_s)


if __name__ == "__main__":
    main()
