"""The embedded default: every service on 127.0.0.1 in one process, local storage, in-process inference.

This module is the composition root of ``semforge run``; the services
themselves never import each other.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

from .rpc import RunningServer, ServiceConfig, build_server, env_float, env_int, env_str
from .security import new_secret, set_process_service_token
from .storage import ObjectStore, open_store

__all__ = ["Embedded", "start_embedded"]

log = logging.getLogger("semforge.embedded")


@dataclass
class Embedded:
    store: ObjectStore
    servers: dict[str, RunningServer] = field(default_factory=dict)
    runner: object = None  # semforge.jobs.JobRunner of the gateway

    @property
    def gateway_address(self) -> str:
        return self.servers["gateway"].address

    @property
    def orchestrator(self):
        """The job records (``load``, ``list``...) as the gateway sees them."""
        return self.runner.jobs

    def stop(self, grace: float = 1.0) -> None:
        if self.runner is not None:
            self.runner.close(grace)
        for s in reversed(list(self.servers.values())):
            s.stop(grace)


def start_embedded(*, store: str | ObjectStore | None = None, gateway_port: int = 0, metrics_port: int = 0,
                   store_retry_s: float = 300.0, resume_after_s: float = 60.0) -> Embedded:
    """Start segment, measure, classify, render, translate and the gateway on 127.0.0.1.

    Parameters
    ----------
    store : URL, path or ObjectStore
        Object store (default: a local directory).
    gateway_port : int
        0 picks a free port.
    """
    from semforge_classify.server import register as classify_reg
    from semforge_gateway.server import GatewayConfig
    from semforge_gateway.server import ready as gateway_ready
    from semforge_gateway.server import register as gateway_reg
    from semforge_measure.server import register as measure_reg
    from semforge_render.server import register as render_reg
    from semforge_segment.server import register as segment_reg
    from semforge_translate.server import register as translate_reg

    st = store if isinstance(store, ObjectStore) else open_store(store)
    emb = Embedded(store=st)
    try:
        # security (docs/security.md): callers on this host are trusted without set-up (loopback), a token
        # when sent must be valid; segment/measure/classify accept only the gateway (a per-process secret)
        auth = env_str("SEMFORGE_AUTH", "loopback")
        service_token = env_str("SEMFORGE_SERVICE_TOKEN") or new_secret()
        set_process_service_token(service_token)
        front = ServiceConfig(port=0, host="127.0.0.1", auth=auth, tokens_file=env_str("SEMFORGE_TOKENS", ""))
        base = ServiceConfig(port=0, host="127.0.0.1", auth="service" if auth != "none" else "none",
                             service_token=service_token)
        emb.servers["segment"] = build_server("segment", segment_reg(st), base, ready_check=lambda: st.ping() is None)
        emb.servers["measure"] = build_server("measure", measure_reg(st), base, ready_check=lambda: st.ping() is None)
        emb.servers["classify"] = build_server("classify", classify_reg(st), base, ready_check=lambda: st.ping() is None)
        from semforge_render.server import ready as render_ready
        from semforge_translate.server import ready as translate_ready

        emb.servers["render"] = build_server("render", render_reg(st), front,
                                             ready_check=lambda: st.ping() is None and render_ready())
        emb.servers["translate"] = build_server("translate", translate_reg(st), front,
                                                ready_check=lambda: st.ping() is None and translate_ready())
        gcfg = GatewayConfig(port=gateway_port, host="127.0.0.1", metrics_port=metrics_port,
                             segment_addr=emb.servers["segment"].address,
                             measure_addr=emb.servers["measure"].address,
                             classify_addr=emb.servers["classify"].address,
                             store_retry_s=store_retry_s, resume_after_s=resume_after_s,
                             max_megapixels=env_float("MAX_MEGAPIXELS", GatewayConfig.max_megapixels, minimum=0.01),
                             max_active_jobs_per_tenant=env_int("MAX_ACTIVE_JOBS_PER_TENANT", 0, minimum=0),
                             auth=front.auth, tokens_file=front.tokens_file, service_token=service_token)
        add, emb.runner = gateway_reg(st, gcfg)
        emb.servers["gateway"] = build_server("gateway", add, gcfg, ready_check=lambda: gateway_ready(st, gcfg),
                                              check_interval_s=0.5)
    except BaseException:
        emb.stop(0)
        raise
    return emb
