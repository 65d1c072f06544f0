"""The per-tenant admission limit (#15) reaches the gateway pods from the chart's values."""

from __future__ import annotations

from .chart_tools import documents, render


def _gateway_env(docs):
    for d in docs:
        if d["kind"] == "Deployment" and d["metadata"]["labels"]["app.kubernetes.io/component"] == "gateway":
            return {e["name"]: e.get("value") for e in d["spec"]["template"]["spec"]["containers"][0].get("env", [])}
    raise AssertionError("no gateway Deployment")


def test_max_active_jobs_per_tenant_value():
    assert _gateway_env(documents(render().stdout))["MAX_ACTIVE_JOBS_PER_TENANT"] == "0"
    env = _gateway_env(documents(render(sets=["gateway.maxActiveJobsPerTenant=5"]).stdout))
    assert env["MAX_ACTIVE_JOBS_PER_TENANT"] == "5"
    r = render(sets=["gateway.maxActiveJobsPerTenant=-1"], check=False)
    assert r.returncode != 0 and "maxActiveJobsPerTenant" in r.stderr
