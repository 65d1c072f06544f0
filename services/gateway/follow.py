"""Following a job over a stream (``Analyze``, ``WatchJob``) until it really ends, also across a replica's drain.

The replica's in-memory event stream of a job ends when the job ends here -- or when this replica stops
running it (SIGTERM: the job is released to the other replicas; a lease lost). A stream must not then end with
a record that is not finished (a caller would take a RUNNING job for the last word): while this replica still
serves, it follows the job's record in the store (another replica runs it now); once it drains, it ends the
stream with UNAVAILABLE, which the client answers by watching again through another replica
(``GatewayClient.watch``).
"""

from __future__ import annotations

import time
from typing import Iterator

import grpc

from semforge.common.v1 import common_pb2
from semforge.jobs import TERMINAL, JobRunner
from semforge.rpc import RpcAbort

POLL_S = 0.5


def follow(runner: JobRunner, job_id: str, context: grpc.ServicerContext, ident) -> Iterator:
    """Progress events of ``job_id`` until it is finished (the caller sends the final record, ``runner.get``,
    after the last event); UNAVAILABLE (:class:`RpcAbort`) when this replica starts draining first."""
    # a draining replica stops following at once (not at the end of the grace period, when the server would
    # cut the stream): the client re-attaches through another replica
    yield from runner.events.stream(job_id, lambda: context.is_active() and not runner.stopping.is_set())
    last = None
    while context.is_active():
        job = runner.get(job_id, ident)
        if job.state in TERMINAL:
            return
        if runner.stopping.is_set():
            raise RpcAbort(grpc.StatusCode.UNAVAILABLE, f"this gateway replica is shutting down; job {job_id} goes "
                           "on in another replica: watch it again (WatchJob)")
        key = (job.state, job.images_done, job.message)
        if key != last:  # the job runs in another replica now: its record is what this one can report
            last = key
            yield common_pb2.ProgressEvent(job_id=job_id, image_index=job.images_done - 1, stage="status",
                                           fraction=job.images_done / max(job.images_total, 1),
                                           message=job.message, state=job.state)
        time.sleep(POLL_S)
