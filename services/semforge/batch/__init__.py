"""Batch analysis in shards: a manifest in the object store, workers that each analyse one shard, one report.

One interface, two back ends: local worker processes (:class:`LocalWorkers`, the embedded default) and an
Indexed Kubernetes Job (:class:`KubernetesJobs`, pod command ``semforge worker --batch ID``; the shard is the
pod's ``JOB_COMPLETION_INDEX``). Built only on the public analysis functions (``semforge.workflow``,
``semforge.analysis``) and the object store. :class:`BatchService` (``semforge.batch.service``) is the driver a
gateway hosts: batches of uploads submitted, driven, watched, cancelled and resumed across replicas.

Store layout::

    batches/<id>/manifest.json      images (name, content key, sha256) split into shards, analysis options
    batches/<id>/cancel             present = cancelled (workers stop before their next image)
    batch-results/<rid>/result.json per image: particles, calibration, specimen rows, options
    batch-results/<rid>/labels.tif  instance labels
    batch-results/<rid>/done        written last: the result is complete

``rid`` is the sha256 of the image content and the analysis settings, so each image's result is written once
(a worker skips a done result; two batches over the same images share them), a restarted shard resumes
where it stopped, and the report is the same as the in-process run's.
"""

from ._backends import KubernetesJobs, LocalWorkers, build_indexed_job
from ._manifest import (BatchCancelled, BatchSettings, batch_status, cancel_batch, load_manifest, result_id,
                        submit_batch, submit_stored_batch)
from ._worker import run_shard, write_batch_report

__all__ = ["BatchCancelled", "BatchConfig", "BatchService", "BatchSettings", "KubernetesJobs", "LocalWorkers",
           "batch_status", "build_indexed_job", "cancel_batch", "kubernetes_backend", "load_manifest", "result_id",
           "run_shard", "submit_batch", "submit_stored_batch", "write_batch_report"]

_SERVICE = ("BatchConfig", "BatchService", "kubernetes_backend")


def __getattr__(name: str):
    # the gateway's driver (semforge.batch.service) is imported when asked for: a worker process (`semforge worker`)
    # loads only the shard code, not the tenancy/jobs modules the driver needs
    if name in _SERVICE:
        from . import service

        return getattr(service, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
