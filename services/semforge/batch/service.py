"""The batch driver a gateway hosts (#12): submit (and drive), read, watch, cancel and report batches of uploads,
with the configured back end, across replicas. Plain Python in and out: batches as dicts (:meth:`BatchService.get`),
the library's typed errors (:mod:`semforge.errors`); the gateway (``services/gateway/batch.py``) is the thin gRPC
adapter over it, as it is over :class:`semforge.jobs.JobRunner`.

Store layout besides the manifest's (``batches/<id>/manifest.json`` carries ``tenant`` and ``owner``)::

    batches/<id>/state.json        state, message, finished_at, backend, outputs (written by the driving replica)
    batches/<id>/report/<file>     the sample report once SUCCEEDED

    batches/<id>/lease/<n>         create-only: the replica that wrote it drives generation n of the batch
    batches/<id>/heartbeat         the driving replica's clock, every resume_after_s / 4
    batch-released/<id>            a stopping replica gave the batch up: another one resumes it at once
    active-batches/<id>            not finished (the stale-driver scan reads only these)

Any replica answers :meth:`~BatchService.get` / :meth:`~BatchService.watch` / :meth:`~BatchService.cancel` /
:meth:`~BatchService.output_key` (everything is in the store); the replica that accepted the batch drives it.
When that replica stops (its ``stopping`` event: SIGTERM) before the batch ends, it stops its local workers
(finished images stay done), writes ``batch-released/<id>``, and another replica takes the next lease and runs the
shards again (finished images are skipped): a rolling replacement of the gateways loses no batch. A replica killed
without SIGTERM releases nothing, but its heartbeat stops: once it is older than ``resume_after_s`` another replica
takes the next lease and resumes the batch (local workers die with the replica that started them: Linux
parent-death signal). A Kubernetes Job needs no driver and goes on; only its report then needs ``semforge batch
report``. A batch of another tenant is NOT_FOUND like an unknown id.
"""

from __future__ import annotations

import json
import logging
import os
import re
import tempfile
import threading
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator

from ..errors import FailedPrecondition, NotFound, Unavailable, UserInputError
from ..jobs.tenancy import no_object, owner_of, owns_upload, tenant_of, upload_name, visible
from ..pipeline import AnalysisOptions
from ..storage import ObjectNotFound, ObjectStore, key_segment, validate_key
from ._backends import KubernetesJobs, LocalWorkers
from ._manifest import BatchSettings, batch_status, cancel_batch, load_manifest, submit_stored_batch
from ._worker import write_batch_report

__all__ = ["BatchConfig", "BatchService", "FINISHED", "STATES", "kubernetes_backend"]

log = logging.getLogger("semforge.batch")

STATES = ("QUEUED", "RUNNING", "SUCCEEDED", "FAILED", "CANCELLED")  # the names of the JobState values
FINISHED = ("SUCCEEDED", "FAILED", "CANCELLED")
POLL_S = 0.5
_BATCH_ID = re.compile(r"[0-9a-f]{32}")


@dataclass
class BatchConfig:
    """How a gateway drives its batches: ``backend`` ``local`` (``workers`` worker processes beside the gateway,
    each on ``threads`` threads, 0 = cores // workers; they open the store at ``store_url``) or ``kubernetes`` (an
    Indexed Job per batch: ``image``, ``namespace``, the store's credentials from the Secret ``store_secret`` under
    ``store_secret_keys``, the worker pods' ``worker_resources``, ``node_selector``, ``tolerations`` in the
    Kubernetes form, ``image_pull_policy``, ``image_pull_secrets``); ``resume_after_s``: a batch whose driver's
    heartbeat is older than this is taken over by another replica. The gateway reads it from its environment."""

    backend: str = "local"
    workers: int = 2
    image: str = ""
    namespace: str = "default"
    store_secret: str = ""
    store_url: str = ""
    threads: int = 0
    resume_after_s: float = 60.0
    store_secret_keys: tuple = ("accessKey", "secretKey")
    worker_resources: dict | None = None
    node_selector: dict | None = None
    tolerations: list | None = None
    image_pull_policy: str = "IfNotPresent"
    image_pull_secrets: tuple = ()


def _snake(d: dict) -> dict:
    return {re.sub(r"([A-Z])", r"_\1", k).lower(): v for k, v in d.items()}


def kubernetes_backend(cfg: BatchConfig) -> KubernetesJobs:
    """The :class:`KubernetesJobs` of this configuration: the worker pods get this process's store settings
    (``SEMFORGE_STORE`` = ``cfg.store_url``, ``S3_ENDPOINT``/``S3_SECURE`` from the environment, credentials from
    ``cfg.store_secret``), its placement and resources."""
    env = [{"name": "SEMFORGE_STORE", "value": cfg.store_url}]
    env += [{"name": n, "value": os.environ[n]} for n in ("S3_ENDPOINT", "S3_SECURE") if os.environ.get(n)]
    if cfg.store_secret:
        env += [{"name": n, "valueFrom": {"secretKeyRef": {"name": cfg.store_secret, "key": k}}}
                for n, k in zip(("S3_ACCESS_KEY", "S3_SECRET_KEY"), cfg.store_secret_keys)]
    return KubernetesJobs(image=cfg.image, env=env, namespace=cfg.namespace, parallelism=cfg.workers,
                          resources=cfg.worker_resources, node_selector=cfg.node_selector,
                          tolerations=[_snake(t) for t in cfg.tolerations] if cfg.tolerations else None,
                          image_pull_policy=cfg.image_pull_policy, image_pull_secrets=list(cfg.image_pull_secrets))


def _rfc3339(t: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(t))


def _default_options(options) -> AnalysisOptions:
    return options if options is not None else AnalysisOptions()


class BatchService:
    """Batches of one gateway replica: submit (and drive), read, watch, cancel, report files.

    A batch as :meth:`get` returns it (a dict): ``batch_id``, ``state`` (one of :data:`STATES`), ``images_total``,
    ``images_done``, ``shards``, ``message``, ``sample``, ``tenant``, ``owner``, ``created_at``, ``finished_at``
    (RFC 3339, "" until finished), ``backend``, ``outputs`` (report file name -> store key). ``identity`` is the
    caller (:class:`semforge.security.Identity`, None = sees everything). ``options_of`` turns the ``options`` given
    to :meth:`submit` into :class:`AnalysisOptions` (the gateway: its proto conversion; default: they already are,
    None = the defaults). ``stopping`` set (SIGTERM): the drivers stop and release their batches, and no new batch
    is accepted."""

    def __init__(self, store: ObjectStore, cfg: BatchConfig, stopping: threading.Event | None = None, *,
                 options_of: Callable[[Any], AnalysisOptions] = _default_options):
        self.store, self.cfg = store, cfg
        self.options_of = options_of
        self.stopping = stopping or threading.Event()
        self._driving: dict[str, threading.Event] = {}
        self._lock = threading.Lock()
        self.replica = uuid.uuid4().hex[:8]
        threading.Thread(target=self._on_stop, name="batch-stop", daemon=True).start()
        threading.Thread(target=self._resume_released, name="batch-resume", daemon=True).start()

    # -- records -----------------------------------------------------------------------------------------------
    def _state(self, batch_id: str) -> dict:
        try:
            return json.loads(self.store.get_bytes(f"batches/{batch_id}/state.json"))
        except ObjectNotFound:
            return {"state": "QUEUED"}

    def _put_state(self, batch_id: str, **fields) -> None:
        doc = {**self._state(batch_id), **fields}
        self.store.put_bytes(f"batches/{batch_id}/state.json", json.dumps(doc).encode())

    def _manifest(self, batch_id: str, identity) -> dict:
        try:  # ids are what submit made (32 hex digits): nothing else is looked up
            m = load_manifest(self.store, batch_id) if _BATCH_ID.fullmatch(batch_id or "") else None
        except NotFound:
            m = None
        if m is None or "tenant" not in m or not visible(identity, m["tenant"]):  # foreign = unknown
            raise NotFound(f"no batch {batch_id!r}; SubmitBatch returns the id", field="batch_id")
        return m

    def _view(self, m: dict) -> dict:
        st = batch_status(self.store, m["id"])
        doc = self._state(m["id"])
        state = doc["state"]
        if st["cancelled"] and state not in FINISHED:
            state = "CANCELLED"  # the marker wins, whatever the driving replica writes later
        return {"batch_id": m["id"], "state": state, "images_total": m["images"], "images_done": st["done"],
                "shards": st["shards"], "message": doc.get("message", ""), "sample": m.get("name", ""),
                "tenant": m["tenant"], "owner": m.get("owner", ""), "created_at": _rfc3339(m["created"]),
                "finished_at": doc.get("finished_at", ""), "backend": doc.get("backend", ""),
                "outputs": dict(doc.get("outputs", {}))}

    # -- what a caller asks ------------------------------------------------------------------------------------
    def submit(self, images: list[str], names: list[str] = (), options: Any = None, sample: str = "",
               shards: int = 0, *, identity=None) -> dict:
        """A batch over uploads (their store keys) of the caller's tenant, one name each (or "": the upload's file
        name without its suffix); ``shards`` 0 = one per worker. Returns the batch (:meth:`get`); this replica
        drives it from now on."""
        if self.stopping.is_set():
            raise Unavailable("this gateway replica is shutting down; submit again")
        if not images:
            raise UserInputError("no images given: upload images first and pass their references", field="images")
        if names and len(names) != len(images):
            raise UserInputError(f"{len(names)} names for {len(images)} images", field="names")
        if shards < 0:
            raise UserInputError(f"shards must be >= 0, got {shards}", field="shards")
        if self.cfg.backend == "local" and not self.cfg.store_url:
            raise FailedPrecondition("the local batch back end needs a store its worker processes can open "
                                     "(SEMFORGE_STORE)")
        if self.cfg.backend == "kubernetes" and not self.cfg.image:
            raise FailedPrecondition("BATCH_BACKEND=kubernetes needs BATCH_IMAGE")
        settings = BatchSettings(self.options_of(options))
        tenant = tenant_of(identity)
        entries = []
        for i, key in enumerate(images):
            if not key:
                raise UserInputError(f"image {i}: empty object reference", field=f"images[{i}].key")
            validate_key(key)
            if not owns_upload(self.store, identity, key) or not self.store.exists(key):
                raise ObjectNotFound(f"image {i}: {no_object(key)}")
            given = names[i] if names else ""
            name = given or Path(upload_name(self.store, tenant, key) or f"image{i + 1}").name
            name = key_segment(name.rsplit(".", 1)[0] if "." in name and not given else name)
            entries.append((name, key))
        m = submit_stored_batch(self.store, entries, shards=shards or self.cfg.workers, settings=settings,
                                name=sample or "sample", extra={"tenant": tenant, "owner": owner_of(identity)})
        self.store.put_if_absent(f"batches/{m['id']}/lease/0", self.replica.encode())
        self._put_state(m["id"], state="QUEUED", backend=self.cfg.backend, generation=0)
        self.store.put_bytes(f"active-batches/{m['id']}", b"")
        self._start(m)
        log.info("batch %s: %d images in %d shards (%s)", m["id"], m["images"], len(m["shards"]), self.cfg.backend)
        return self._view(m)

    def _start(self, m: dict) -> None:
        stop = threading.Event()
        with self._lock:
            self._driving[m["id"]] = stop
        # not a daemon (said explicitly: a thread inherits it from its creator, and gRPC's handler threads are
        # daemons): on SIGTERM the process waits for the driver to stop its workers and release the batch
        threading.Thread(target=self._drive, args=(m, stop), name=f"batch-{m['id'][:8]}", daemon=False).start()

    def get(self, batch_id: str, *, identity=None) -> dict:
        return self._view(self._manifest(batch_id, identity))

    def watch(self, batch_id: str, *, identity=None,
              is_active: Callable[[], bool] = lambda: True) -> Iterator[dict]:
        """``{"event": {...}}`` (``job_id``, ``stage`` "batch", ``fraction``, ``state``, ``message``) at every change
        of the batch's state, images done or message, then ``{"batch": <the finished batch>}``; while
        ``is_active()`` (the caller is still there). :class:`Unavailable` when this replica starts stopping first
        (the batch goes on: watch it again through another replica)."""
        m = self._manifest(batch_id, identity)
        last = None
        while is_active():
            b = self._view(m)
            key = (b["state"], b["images_done"], b["message"])
            if key != last:
                last = key
                yield {"event": {"job_id": batch_id, "stage": "batch", "state": b["state"],
                                 "fraction": b["images_done"] / max(b["images_total"], 1),
                                 "message": f"{b['images_done']}/{b['images_total']} images"
                                            + (f": {b['message']}" if b["message"] else "")}}
            if b["state"] in FINISHED:
                yield {"batch": b}
                return
            if self.stopping.is_set():
                raise Unavailable(f"this gateway replica is shutting down; batch {batch_id} goes on: watch it "
                                  "again (WatchBatch)")
            time.sleep(POLL_S)

    def cancel(self, batch_id: str, *, identity=None) -> dict:
        m = self._manifest(batch_id, identity)
        if self._state(batch_id)["state"] not in ("SUCCEEDED", "FAILED"):
            cancel_batch(self.store, batch_id)
            if self.cfg.backend == "kubernetes":
                try:
                    self._kubernetes().cancel(self.store, batch_id)
                except Exception as exc:  # noqa: BLE001 - the marker stops the workers anyway
                    log.warning("batch %s: could not delete its Job (%s); its workers stop at the cancel marker",
                                batch_id, exc)
        return self._view(m)

    def output_key(self, batch_id: str, name: str, *, identity=None) -> str:
        """The store key of the report file ``name`` of a SUCCEEDED batch."""
        m = self._manifest(batch_id, identity)
        outputs = self._state(batch_id).get("outputs", {})
        if name not in outputs:
            b = self._view(m)
            if b["state"] != "SUCCEEDED":
                raise ObjectNotFound(f"batch {batch_id} has no report yet (state JOB_STATE_{b['state']}); wait "
                                     "for it to finish")
            raise ObjectNotFound(f"batch {batch_id} has no output {name!r}; available: {', '.join(sorted(outputs))}")
        return outputs[name]

    # -- driving a batch ---------------------------------------------------------------------------------------
    def _kubernetes(self) -> KubernetesJobs:
        return kubernetes_backend(self.cfg)

    def _drive(self, m: dict, stop: threading.Event) -> None:
        batch_id = m["id"]
        ended = threading.Event()

        def beat():  # the replica is alive and drives this batch
            while True:
                try:
                    self.store.put_bytes(f"batches/{batch_id}/heartbeat", repr(time.time()).encode())
                except Exception:  # noqa: BLE001 - store down: the next beat tries again
                    pass
                if ended.wait(self.cfg.resume_after_s / 4):
                    return

        threading.Thread(target=beat, name=f"batch-beat-{batch_id[:8]}", daemon=True).start()
        try:
            self._put_state(batch_id, state="RUNNING")
            if self.cfg.backend == "local":
                LocalWorkers(self.cfg.store_url, workers=self.cfg.workers,
                             threads=self.cfg.threads or None).run(self.store, m, stop=stop)
            else:
                try:
                    self._kubernetes().run(self.store, m, stop=stop)
                except Exception as exc:  # noqa: BLE001 - say what to fix
                    raise RuntimeError(
                        f"BATCH_BACKEND=kubernetes could not run the batch's Job ({type(exc).__name__}: {exc}); the "
                        "gateway needs a cluster: run it in one (a service account allowed to create/delete jobs and "
                        "get jobs/status: the chart's rbac) or set KUBECONFIG") from exc
            st = batch_status(self.store, batch_id)
            if st["cancelled"]:
                self._put_state(batch_id, state="CANCELLED", message=f"cancelled after {st['done']} of {st['images']} "
                                "images", finished_at=_rfc3339(time.time()))
            elif stop.is_set() and st["done"] < st["images"] and self.cfg.backend == "kubernetes":
                self._put_state(batch_id, message=(  # the Job needs no driver; only the report needs one
                    f"the gateway replica following it stopped at {st['done']} of {st['images']} images; its Job goes "
                    f"on: write the report with `semforge batch report {batch_id} --store ...` once it is done"))
            elif stop.is_set() and st["done"] < st["images"]:  # SIGTERM: another replica resumes it at once
                self._put_state(batch_id, state="RUNNING", message=(
                    f"released by a stopping gateway replica at {st['done']} of {st['images']} images; another "
                    "replica resumes it"))
                self.store.put_bytes(f"batch-released/{batch_id}", self.replica.encode())
                log.info("batch %s released to the other replicas", batch_id)
            elif st["done"] < st["images"]:
                self._put_state(batch_id, state="FAILED", finished_at=_rfc3339(time.time()), message=(
                    f"{st['images'] - st['done']} of {st['images']} images have no result (a worker failed; the "
                    "gateway log has its output); submit the same images again: finished results are reused"))
            else:
                self._put_state(batch_id, state="RUNNING", message="writing the report")
                outputs = self._report(m)
                self._put_state(batch_id, state="SUCCEEDED", message="", outputs=outputs,
                                finished_at=_rfc3339(time.time()))
            log.info("batch %s: %s", batch_id, self._state(batch_id)["state"])
        except Exception as exc:  # noqa: BLE001 - a batch that cannot go on says why
            log.exception("batch %s failed", batch_id)
            try:
                self._put_state(batch_id, state="FAILED", message=f"{type(exc).__name__}: {exc}",
                                finished_at=_rfc3339(time.time()))
            except Exception:  # noqa: BLE001 - the store is down: nothing more to record
                pass
        finally:
            ended.set()
            try:
                if self._state(batch_id).get("state") in FINISHED:
                    self.store.delete(f"active-batches/{batch_id}")
            except Exception:  # noqa: BLE001 - the scan drops it later
                pass
            with self._lock:
                self._driving.pop(batch_id, None)

    def _report(self, m: dict) -> dict[str, str]:
        outputs = {}
        with tempfile.TemporaryDirectory(prefix="semforge-batch-report-") as tmp:
            write_batch_report(self.store, m["id"], tmp, title=f"semforge report: {m['name']}")
            for p in sorted(Path(tmp).rglob("*")):
                if p.is_file():
                    rel = p.relative_to(tmp).as_posix()
                    key = f"batches/{m['id']}/report/{rel}"
                    self.store.put_bytes(key, p.read_bytes())
                    outputs[rel] = key
        return outputs

    def _resume_released(self) -> None:
        """Take over batches that a stopping replica released: one create-only lease per generation, so exactly
        one replica resumes each."""

        def take_over(batch_id: str, why: str) -> None:
            gen = int(self._state(batch_id).get("generation", 0)) + 1
            if not self.store.put_if_absent(f"batches/{batch_id}/lease/{gen}", self.replica.encode()):
                return  # another replica took it
            self._put_state(batch_id, generation=gen, message=f"resumed by another gateway replica ({why})")
            self.store.delete(f"batch-released/{batch_id}")
            log.info("resuming %s batch %s (generation %d)", why, batch_id, gen)
            self._start(load_manifest(self.store, batch_id))

        tick = 0
        while not self.stopping.wait(1.0):
            tick += 1
            try:
                released = [k.split("/", 1)[1] for k in self.store.list_after("batch-released/")]
                # every 5 s: batches whose driver died without releasing them (SIGKILL, node lost)
                active = [k.split("/", 1)[1] for k in self.store.list_after("active-batches/")] if tick % 5 == 0 else []
            except Exception:  # noqa: BLE001 - store down: try again next second
                continue
            for batch_id, why in [(b, "released") for b in released] + [(b, "stale") for b in active]:
                if self.stopping.is_set():
                    break
                if not _BATCH_ID.fullmatch(batch_id):
                    continue
                with self._lock:
                    if batch_id in self._driving:
                        continue
                try:
                    if why == "stale" and not self._stale(batch_id):
                        continue
                    take_over(batch_id, why)
                except Exception:  # noqa: BLE001 - the next scan tries again
                    log.exception("could not resume batch %s", batch_id)

    def _stale(self, batch_id: str) -> bool:
        """Not finished, driven by local workers, and its driver's heartbeat older than resume_after_s."""
        doc = self._state(batch_id)
        if doc.get("state") in FINISHED:
            self.store.delete(f"active-batches/{batch_id}")
            return False
        if doc.get("backend", "local") != "local" or self.store.exists(f"batch-released/{batch_id}"):
            return False  # a Job needs no driver; a released batch is taken over by the released path
        try:
            beat = float(self.store.get_bytes(f"batches/{batch_id}/heartbeat"))
        except (ObjectNotFound, ValueError):  # its replica died before the first beat: count from the submission
            beat = float(load_manifest(self.store, batch_id)["created"])
        return time.time() - beat > self.cfg.resume_after_s

    def _on_stop(self) -> None:
        self.stopping.wait()
        with self._lock:
            driving = list(self._driving.values())
        for stop in driving:  # each driver stops its workers and records how far the batch got
            stop.set()
