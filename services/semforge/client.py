"""Instrument-PC client of the gateway: upload, analyse with progress, fetch results."""

from __future__ import annotations

import hashlib
import os
import sys
import time
from pathlib import Path
from typing import Callable, Iterable

import grpc

from .common.v1 import common_pb2
from .gateway.v1 import gateway_pb2, gateway_pb2_grpc

__all__ = ["GatewayClient", "ProgressBar", "JobFailed", "StreamLost"]

CHUNK = 1 << 20
_FINISHED = (common_pb2.JOB_STATE_SUCCEEDED, common_pb2.JOB_STATE_FAILED, common_pb2.JOB_STATE_CANCELLED)


class ProgressBar:
    """One-line progress on stderr (plain lines when stderr is not a terminal)."""

    def __init__(self, stream=None, width: int = 30):
        self.stream = stream or sys.stderr
        self.width = width
        self.tty = hasattr(self.stream, "isatty") and self.stream.isatty()
        self.last = ""

    def __call__(self, ev: common_pb2.ProgressEvent) -> None:
        if ev.stage == "warning":  # a plausibility warning (#13): its own line, never overwritten
            self.stream.write(("\n" if self.tty else "") + (ev.message or f"warning [{ev.warning.code}] "
                                                              f"{ev.warning.image}: {ev.warning.message}") + "\n")
            self.stream.flush()
            return
        filled = int(round(ev.fraction * self.width))
        bar = "#" * filled + "-" * (self.width - filled)
        what = f"{ev.image_name} {ev.stage}".strip()
        line = f"[{bar}] {ev.fraction * 100:5.1f}% {what}: {ev.message}"
        if self.tty:
            self.stream.write("\r" + line[:120].ljust(120))
            if ev.stage == "done":
                self.stream.write("\n")
        elif line != self.last:
            self.stream.write(line + "\n")
        self.stream.flush()
        self.last = line


class JobFailed(Exception):
    """A job that ended FAILED or CANCELLED (``job`` holds the record)."""

    def __init__(self, job):
        super().__init__(f"job {job.job_id} {common_pb2.JobState.Name(job.state)}: {job.message}")
        self.job = job


class StreamLost(Exception):
    """The progress stream of a running job broke and could not be re-attached within ``reattach_s``: the job
    goes on in the server (its record is in the store); ``job_id`` is what to follow it by."""

    def __init__(self, job_id: str, exc: grpc.RpcError):
        super().__init__(f"lost the gateway ({exc.code().name}: {exc.details()}); job {job_id} goes on in the "
                         f"server: follow it with `semforge client status {job_id}`, then "
                         f"`semforge client fetch {job_id} --out DIR`")
        self.job_id = job_id


def _busy_hint(exc: grpc.RpcError) -> float | None:
    """Seconds to wait when the gateway refused a stream for load (RESOURCE_EXHAUSTED with a retry hint);
    None for any other failure (a size limit is RESOURCE_EXHAUSTED too, but without a hint)."""
    if exc.code() != grpc.StatusCode.RESOURCE_EXHAUSTED:
        return None
    from .rpc._limits import retry_after_ms

    ms = retry_after_ms(exc)
    return None if ms is None else ms / 1e3


class GatewayClient:
    def __init__(self, address: str | None = None, *, timeout_s: float = 30.0, token: str | None = None,
                 busy_wait_s: float = 300.0):
        from ._gateway_addresses import channel_target, default_gateway
        from .security import client_token, open_channel

        # one gateway HOST:PORT or several "H1:P1,H2:P2" (round robin, health-checked; _gateway_addresses)
        self.address = address or default_gateway()
        self.busy_wait_s = busy_wait_s  # how long analyze() waits for a busy gateway (RESOURCE_EXHAUSTED + hint)
        self.retries = 0  # calls repeated after UNAVAILABLE / busy, streams re-attached: never surfaced to the caller
        self.unavailable_wait_s = 20.0  # how long a call safe to repeat waits for some gateway to answer
        target, lb_options = channel_target(self.address)
        # token: explicit, $SEMFORGE_TOKEN, $SEMFORGE_TOKEN_FILE or $SEMFORGE_HOME/token; TLS from $SEMFORGE_TLS_*
        self.channel = open_channel(target, token=client_token(token),
                                    options=[("grpc.max_receive_message_length", 64 << 20)] + lb_options)
        self.stub = gateway_pb2_grpc.GatewayServiceStub(self.channel)
        self.timeout_s = timeout_s

    def close(self) -> None:
        self.channel.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def retrying(self, call: Callable[[], object]) -> object:
        """``call()``, repeated (with backoff, up to ``busy_wait_s``) while the gateway is UNAVAILABLE or busy (a
        replica replaced, every replica restarting): only for calls that are safe to repeat. Counts ``retries``."""
        t0 = time.monotonic()
        delay = 0.2
        while True:
            try:
                return call()
            except grpc.RpcError as exc:
                hint = _busy_hint(exc)
                # busy: as long as busy_wait_s; no gateway at all: unavailable_wait_s (a replica comes back in
                # seconds during an upgrade; a gateway that is down should not keep a command waiting minutes)
                limit = self.busy_wait_s if hint is not None else min(self.busy_wait_s, self.unavailable_wait_s)
                if (exc.code() != grpc.StatusCode.UNAVAILABLE and hint is None) or time.monotonic() - t0 > limit:
                    raise
                self.retries += 1
                time.sleep(hint or delay)
                delay = min(delay * 2, 5.0)

    def submit(self, refs, names, options: common_pb2.AnalysisOptions | None = None, *,
               sample: str = "sample") -> common_pb2.Job:
        """Queue an analysis (``SubmitJob``) and return its record at once; follow it with :meth:`watch`. Not
        repeated by the client (a repeat could queue the job twice): a draining replica finishes it first."""
        from .storage import key_segment

        names = [key_segment(n) for n in names] if names else names
        req = gateway_pb2.AnalyzeRequest(images=refs, names=names, options=options or common_pb2.AnalysisOptions(),
                                         sample=sample)
        return self.stub.SubmitJob(gateway_pb2.SubmitJobRequest(request=req), timeout=self.timeout_s).job

    def get_job(self, job_id: str) -> common_pb2.Job:
        return self.retrying(lambda: self.stub.GetJob(gateway_pb2.GetJobRequest(job_id=job_id),
                                                       timeout=self.timeout_s).job)

    def cancel_job(self, job_id: str) -> common_pb2.Job:
        return self.retrying(lambda: self.stub.CancelJob(gateway_pb2.CancelJobRequest(job_id=job_id),
                                                          timeout=self.timeout_s).job)

    def wait_ready(self, timeout_s: float = 30.0) -> None:
        from grpc_health.v1 import health_pb2, health_pb2_grpc

        deadline = time.monotonic() + timeout_s
        hs = health_pb2_grpc.HealthStub(self.channel)
        while True:
            try:
                r = hs.Check(health_pb2.HealthCheckRequest(), timeout=2)
                if r.status == health_pb2.HealthCheckResponse.SERVING:
                    return
            except grpc.RpcError:
                pass
            if time.monotonic() > deadline:
                raise TimeoutError(f"gateway at {self.address} is not serving after {timeout_s:.0f} s")
            time.sleep(0.2)

    def upload(self, path: str | os.PathLike, *, name: str | None = None) -> gateway_pb2.UploadResponse:
        p = Path(path)
        h = hashlib.sha256()
        with open(p, "rb") as fh:
            for b in iter(lambda: fh.read(CHUNK), b""):
                h.update(b)

        def messages() -> Iterable[gateway_pb2.UploadRequest]:
            first = True
            with open(p, "rb") as fh:
                while True:
                    b = fh.read(CHUNK)
                    if first:
                        yield gateway_pb2.UploadRequest(name=name or p.name, data=b, expected_sha256=h.hexdigest())
                        first = False
                    elif b:
                        yield gateway_pb2.UploadRequest(data=b)
                    if not b:
                        return

        # a busy gateway refuses the stream before reading it, a replica that went away drops it: wait, send again
        # (content addressed: a repeat stores nothing twice)
        return self.retrying(lambda: self.stub.Upload(messages(), timeout=max(self.timeout_s, 600)))

    def analyze(self, refs, names, options: common_pb2.AnalysisOptions, *, sample: str = "sample",
                progress: Callable[[common_pb2.ProgressEvent], None] | None = None) -> common_pb2.Job:
        from .storage import key_segment

        # image names become object-key segments (job outputs): "Probe 3 (Ätzung)" -> "Probe_3_Atzung"
        names = [key_segment(n) for n in names] if names else names
        req = gateway_pb2.AnalyzeRequest(images=refs, names=names, options=options, sample=sample)
        job = None
        job_id = ""
        give_up = time.monotonic() + self.busy_wait_s
        told = False
        while True:
            received = False
            try:
                for msg in self.stub.Analyze(req):
                    received = True
                    if msg.HasField("event"):
                        job_id = job_id or msg.event.job_id
                        if progress:
                            progress(msg.event)
                    if msg.HasField("job"):
                        job = msg.job
                break
            except grpc.RpcError as exc:
                if received and job_id and exc.code() == grpc.StatusCode.UNAVAILABLE:
                    # the gateway went away mid-job (a replica replaced, a restart): the job lives in the store;
                    # follow it on through whichever replica answers next
                    self.retries += 1
                    return self.watch(job_id, progress=progress)
                # a gateway at its stream cap, or the caller's tenant at its limit of queued/running jobs
                # (MAX_ACTIVE_JOBS_PER_TENANT), refuses before creating the job: wait as it says and ask again
                hint = _busy_hint(exc)
                if received or hint is None or time.monotonic() + hint > give_up:
                    raise
                if progress and not told:  # say it once: the client waits, it is not hung
                    progress(common_pb2.ProgressEvent(stage="waiting", message=(
                        f"gateway busy ({exc.details()}); asking again for up to {self.busy_wait_s:.0f} s")))
                    told = True
                self.retries += 1
                time.sleep(hint)
        if job is None:
            raise RuntimeError("the gateway ended the analysis stream without a job record")
        if job.state not in _FINISHED:  # the stream ended before the job did: follow it to its end
            self.retries += 1
            return self.watch(job.job_id, progress=progress)
        return job

    def watch(self, job_id: str, *, progress: Callable[[common_pb2.ProgressEvent], None] | None = None,
              reattach_s: float | None = None) -> common_pb2.Job:
        """Follow a job to its end (``WatchJob``), re-attaching with backoff while the gateway is UNAVAILABLE
        (for up to ``reattach_s``, default ``busy_wait_s``); :class:`StreamLost` (with the job id) after that."""
        deadline = time.monotonic() + (self.busy_wait_s if reattach_s is None else reattach_s)
        delay = 0.2
        while True:
            job = None
            try:
                for msg in self.stub.WatchJob(gateway_pb2.WatchJobRequest(job_id=job_id)):
                    if msg.HasField("event") and progress:
                        progress(msg.event)
                    if msg.HasField("job"):
                        job = msg.job
                if job is not None and job.state in _FINISHED:
                    return job
                # the stream ended before the job did (an older replica that stopped running it): watch again
                self.retries += 1
                time.sleep(delay)
                continue
            except grpc.RpcError as exc:
                if exc.code() != grpc.StatusCode.UNAVAILABLE and _busy_hint(exc) is None:
                    raise
                if time.monotonic() > deadline:
                    raise StreamLost(job_id, exc) from None
                self.retries += 1
                if progress and delay == 0.2:  # say it once: the job goes on, the client waits for a gateway
                    progress(common_pb2.ProgressEvent(job_id=job_id, stage="waiting", message=(
                        f"lost the gateway ({exc.code().name}); re-attaching to job {job_id}")))
                time.sleep(_busy_hint(exc) or delay)
                delay = min(delay * 2, 5.0)

    def analyze_files(self, paths: list[str | os.PathLike], outdir: str | os.PathLike, options=None, *,
                      sample: str = "sample", wait_s: float = 30.0,
                      progress: Callable[[common_pb2.ProgressEvent], None] | None = None,
                      on_upload: Callable[[str, gateway_pb2.UploadResponse], None] | None = None) -> common_pb2.Job:
        """The remote analysis of image files: wait for the gateway, upload, analyse with progress, download
        the report into ``outdir``. ``options``: a :class:`semforge.pipeline.AnalysisOptions` (default: all
        defaults). Raises TimeoutError (gateway not serving) or :class:`JobFailed`."""
        from .rpc.convert import analysis_options_pb

        self.wait_ready(timeout_s=wait_s)
        refs, names = [], []
        for path in paths:
            r = self.upload(path)
            refs.append(r.image.ref)
            names.append(Path(path).name.rsplit(".", 1)[0])
            if on_upload:
                on_upload(str(path), r)
        pb = analysis_options_pb(options) if options is not None else common_pb2.AnalysisOptions()
        job = self.analyze(refs, names, pb, sample=sample, progress=progress)
        if job.state != common_pb2.JOB_STATE_SUCCEEDED:
            raise JobFailed(job)
        self.download_outputs(job, outdir)
        return job

    def list_jobs(self, *, page_size: int = 100, page_token: str = "") -> tuple[list, str]:
        """One page of the caller's jobs, newest first, and the token of the next page ("" on the last)."""
        r = self.retrying(lambda: self.stub.ListJobs(gateway_pb2.ListJobsRequest(
            page_size=page_size, page_token=page_token), timeout=self.timeout_s))
        return list(r.jobs), r.next_page_token

    def iter_jobs(self, *, page_size: int = 100):
        """Every job the caller may see, newest first, page by page."""
        token = ""
        while True:
            jobs, token = self.list_jobs(page_size=page_size, page_token=token)
            yield from jobs
            if not token:
                return

    def delete_job(self, job_id: str) -> int:
        """Delete a finished job (record and report); returns the number of objects removed."""
        return self.stub.DeleteJob(gateway_pb2.DeleteJobRequest(job_id=job_id), timeout=self.timeout_s).objects_deleted

    def download(self, job_id: str, name: str, dest: str | os.PathLike) -> int:
        dest = Path(dest)
        dest.parent.mkdir(parents=True, exist_ok=True)
        tmp = dest.with_name(dest.name + ".part")

        def fetch() -> int:  # from the start again when a replica goes away mid-file
            n = 0
            with open(tmp, "wb") as fh:
                for msg in self.stub.Download(gateway_pb2.DownloadRequest(job_id=job_id, name=name),
                                              timeout=max(self.timeout_s, 600)):
                    fh.write(msg.data)
                    n += len(msg.data)
            return n

        n = self.retrying(fetch)
        os.replace(tmp, dest)
        return n

    def download_outputs(self, job: common_pb2.Job, outdir: str | os.PathLike) -> list[Path]:
        out = Path(outdir)
        written = []
        for name in sorted(job.outputs):
            if name.startswith("_state/"):
                continue
            self.download(job.job_id, name, out / name)
            written.append(out / name)
        return written
