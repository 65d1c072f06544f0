"""Analysis jobs in the library: records in the object store, progress events, the runner.

Any replica can report on, watch, cancel (a cancel marker that wins over the
running replica's saves) or resume (a create-only lease: exactly one replica)
any job. The gateway is a thin gRPC adapter over :class:`JobRunner`.
"""

from .events import EventHub
from .records import TERMINAL, JobStore
from .runner import FairQueue, JobRunner
from . import tenancy

__all__ = ["EventHub", "FairQueue", "JobRunner", "JobStore", "TERMINAL", "tenancy"]
