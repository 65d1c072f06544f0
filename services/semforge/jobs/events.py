"""Progress events of jobs: live for jobs this replica runs, polled from the records for the others."""

from __future__ import annotations

import collections
import threading
import time
from dataclasses import dataclass, field
from typing import Callable, Iterator

from .records import TERMINAL, JobStore

__all__ = ["EventHub"]


@dataclass
class _Stream:
    events: list = field(default_factory=list)
    cond: threading.Condition = field(default_factory=threading.Condition)
    done: bool = False


class EventHub:
    def __init__(self, jobs: JobStore, *, poll_s: float = 0.3, keep: int = 256):
        self.jobs = jobs
        self.poll_s = poll_s
        self.keep = keep
        self._ended: collections.deque = collections.deque()
        self._streams: dict[str, _Stream] = {}
        self._lock = threading.Lock()

    def open(self, job_id: str) -> None:
        with self._lock:
            s = self._streams.get(job_id)
            if s is None or s.done:
                self._streams[job_id] = _Stream()

    def local(self, job_id: str) -> bool:
        with self._lock:
            s = self._streams.get(job_id)
            return s is not None and not s.done

    def emit(self, job, index: int, name: str, stage: str, fraction: float, message: str = "",
             warning=None) -> None:
        from semforge.common.v1 import common_pb2

        ev = common_pb2.ProgressEvent(job_id=job.job_id, image_index=index, image_name=name, stage=stage,
                                      fraction=fraction, message=message, state=job.state)
        if warning is not None:  # stage "warning" (#13): semforge.analysis.Warning_
            ev.warning.code, ev.warning.image, ev.warning.message = warning.code, warning.image, warning.message
        with self._lock:
            s = self._streams.get(job.job_id)
        if s:
            with s.cond:
                s.events.append(ev)
                s.cond.notify_all()

    def close(self, job_id: str) -> None:
        """The job ended here: wake its followers. The last ``keep`` ended streams stay replayable (a
        follower that subscribes just after the end still gets every event); older ones read the record."""
        with self._lock:
            s = self._streams.get(job_id)
            self._ended.append(job_id)
            while len(self._ended) > self.keep:
                old = self._ended.popleft()
                if old in self._streams and self._streams[old].done:
                    del self._streams[old]
        if s:
            with s.cond:
                s.done = True
                s.cond.notify_all()

    def stream(self, job_id: str, is_active: Callable[[], bool] = lambda: True,
               load: Callable[[str], object] | None = None) -> Iterator:
        """Events until the job ends (or the caller goes away)."""
        with self._lock:
            s = self._streams.get(job_id)
        if s is None:
            yield from self._poll(job_id, is_active, load or self.jobs.load)
            return
        i = 0
        while True:
            with s.cond:
                while i >= len(s.events) and not s.done:
                    s.cond.wait(0.5)
                    if not is_active():
                        return
                batch = s.events[i:]
                i = len(s.events)
                finished = s.done and i >= len(s.events)
            yield from batch
            if finished:
                return

    def _poll(self, job_id: str, is_active, load) -> Iterator:
        from semforge.common.v1 import common_pb2

        last = None
        while is_active():
            job = load(job_id)
            key = (job.state, job.images_done, job.message)
            if key != last:
                last = key
                yield common_pb2.ProgressEvent(job_id=job_id, image_index=job.images_done - 1, stage="status",
                                               fraction=job.images_done / max(job.images_total, 1),
                                               message=job.message, state=job.state)
            if job.state in TERMINAL:
                return
            time.sleep(self.poll_s)
