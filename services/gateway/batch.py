"""The gateway's batch RPCs (#12): ``SubmitBatch``, ``GetBatch``, ``WatchBatch``, ``CancelBatch`` and batch report
downloads, a thin adapter over :mod:`semforge.batch` with the configured back end.

Settings (environment): ``BATCH_BACKEND`` ``local`` (default: worker processes beside the gateway, each on
cores // workers threads) or ``kubernetes`` (an Indexed Job per batch through the ``kubernetes`` client, in the
cluster the pod runs in); ``BATCH_WORKERS`` (parallel workers, default 2); ``BATCH_IMAGE``,
``BATCH_NAMESPACE``, ``BATCH_STORE_SECRET`` (kubernetes: the worker image, the namespace of the Jobs, the
Secret with the store's credentials under the keys ``BATCH_STORE_ACCESS_KEY_KEY``/``BATCH_STORE_SECRET_KEY_KEY``,
default ``accessKey``/``secretKey``); ``BATCH_WORKER_RESOURCES``, ``BATCH_NODE_SELECTOR``, ``BATCH_TOLERATIONS``
(kubernetes, JSON in the Kubernetes form: the worker pods' resources, nodeSelector and tolerations -- the chart
sets them for the CPU pool), ``BATCH_IMAGE_PULL_POLICY``, ``BATCH_IMAGE_PULL_SECRETS`` (comma-separated Secret
names); ``BATCH_THREADS`` (local: threads per worker, default
cores // workers -- in a pod ``os.cpu_count()`` is the node's, so the chart sets it).

The batches themselves (store layout, driving, leases, takeover across replicas) are
:class:`semforge.batch.BatchService`, library code the gateway hosts; this module turns the environment into its
:class:`BatchConfig`, requests into its plain arguments and its batches (dicts) into ``gateway_pb2.Batch``.
"""

from __future__ import annotations

import json
import os

from semforge import batch
from semforge.batch import BatchService, kubernetes_backend
from semforge.common.v1 import common_pb2
from semforge.errors import UserInputError
from semforge.gateway.v1 import gateway_pb2
from semforge.rpc import env_float, env_int, env_str, map_exceptions
from semforge.security import current_identity
from semforge.storage import ObjectStore

__all__ = ["BatchConfig", "BatchRpcs", "BatchService", "batch_pb", "kubernetes_backend"]

S = common_pb2


class BatchConfig(batch.BatchConfig):
    """:class:`semforge.batch.BatchConfig` from the gateway's environment (the settings above)."""

    @classmethod
    def from_env(cls, store: ObjectStore, store_url: str | None) -> "BatchConfig":
        backend = env_str("BATCH_BACKEND", "local")
        if backend not in ("local", "kubernetes"):
            raise UserInputError(f"BATCH_BACKEND={backend!r}: use local or kubernetes", field="BATCH_BACKEND")
        root = getattr(store, "root", None)
        return cls(backend=backend, workers=env_int("BATCH_WORKERS", 2, minimum=1), image=env_str("BATCH_IMAGE", ""),
                   namespace=env_str("BATCH_NAMESPACE", "default"), store_secret=env_str("BATCH_STORE_SECRET", ""),
                   store_url=store_url or (str(root) if root is not None else ""),
                   threads=env_int("BATCH_THREADS", 0, minimum=0),
                   resume_after_s=env_float("RESUME_AFTER_S", 60.0, minimum=1),
                   store_secret_keys=(env_str("BATCH_STORE_ACCESS_KEY_KEY", "accessKey"),
                                      env_str("BATCH_STORE_SECRET_KEY_KEY", "secretKey")),
                   worker_resources=_env_json("BATCH_WORKER_RESOURCES", dict),
                   node_selector=_env_json("BATCH_NODE_SELECTOR", dict),
                   tolerations=_env_json("BATCH_TOLERATIONS", list),
                   image_pull_policy=env_str("BATCH_IMAGE_PULL_POLICY", "IfNotPresent"),
                   image_pull_secrets=tuple(n for n in env_str("BATCH_IMAGE_PULL_SECRETS", "").split(",") if n))


def _env_json(name: str, kind: type):
    """A JSON setting (an object or a list in the Kubernetes form); unset or empty = None."""
    raw = os.environ.get(name, "").strip()
    if not raw:
        return None
    try:
        val = json.loads(raw)
    except ValueError as exc:
        raise UserInputError(f"{name} is not JSON ({exc})", field=name) from None
    if not isinstance(val, kind):
        raise UserInputError(f"{name} must be a JSON {'object' if kind is dict else 'list'}", field=name)
    return val or None


def _state_pb(state: str) -> int:
    return S.JobState.Value(f"JOB_STATE_{state}")


def batch_pb(b: dict) -> gateway_pb2.Batch:
    """A batch as :meth:`semforge.batch.BatchService.get` returns it, as the wire's ``Batch``."""
    pb = gateway_pb2.Batch(batch_id=b["batch_id"], state=_state_pb(b["state"]), images_total=b["images_total"],
                           images_done=b["images_done"], shards=b["shards"], message=b["message"],
                           sample=b["sample"], tenant=b["tenant"], owner=b["owner"], created_at=b["created_at"],
                           finished_at=b["finished_at"], backend=b["backend"])
    for name, key in b["outputs"].items():
        pb.outputs[name].CopyFrom(S.ObjectRef(key=key))
    return pb


def _watch_pb(item: dict) -> gateway_pb2.WatchBatchResponse:
    if "batch" in item:
        return gateway_pb2.WatchBatchResponse(batch=batch_pb(item["batch"]))
    ev = item["event"]
    return gateway_pb2.WatchBatchResponse(event=S.ProgressEvent(
        job_id=ev["job_id"], stage=ev["stage"], fraction=ev["fraction"], state=_state_pb(ev["state"]),
        message=ev["message"]))


class BatchRpcs:
    """The batch methods of ``GatewayServicer`` (mixed in; ``self.batches`` is a :class:`BatchService`)."""

    batches: BatchService

    @map_exceptions
    def SubmitBatch(self, request, context):
        b = self.batches.submit([ref.key for ref in request.images], list(request.names), request.options,
                                request.sample, request.shards, identity=current_identity())
        return gateway_pb2.SubmitBatchResponse(batch=batch_pb(b))

    @map_exceptions
    def GetBatch(self, request, context):
        return gateway_pb2.GetBatchResponse(batch=batch_pb(self.batches.get(request.batch_id,
                                                                           identity=current_identity())))

    @map_exceptions
    def WatchBatch(self, request, context):
        for item in self.batches.watch(request.batch_id, identity=current_identity(), is_active=context.is_active):
            yield _watch_pb(item)

    @map_exceptions
    def CancelBatch(self, request, context):
        return gateway_pb2.CancelBatchResponse(batch=batch_pb(self.batches.cancel(request.batch_id,
                                                                                 identity=current_identity())))
