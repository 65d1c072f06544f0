"""``semforge client``: the instrument-PC client of a running gateway (analyze, upload, jobs, status, cancel, fetch)."""

from __future__ import annotations

import argparse

from ._common import RemoteAnalysis, add_analysis_options, analyze_remote, check_inputs


def register(sub) -> None:
    c = sub.add_parser("client", help="instrument-PC client of a running gateway")
    c.add_argument("--server", "--gateway", dest="server", default=None, metavar="HOST:PORT[,HOST:PORT...]",
                   help="the gateway, or several replicas comma-separated (round robin, a replica that drains or "
                        "is down is skipped); default $SEMFORGE_GATEWAY or 127.0.0.1:50051")
    csub = c.add_subparsers(dest="action", required=True)
    ca = csub.add_parser("analyze", help="upload, analyse with progress, fetch the report")
    ca.add_argument("images", nargs="+", metavar="IMAGE")
    ca.add_argument("--out", required=True)
    add_analysis_options(ca)
    ca.add_argument("--sample", default="sample")
    ca.add_argument("--wait", type=float, default=30.0)
    ca.add_argument("--quiet", action="store_true")
    ca.add_argument("--busy-wait", type=float, default=300.0, metavar="SECONDS",
                    help="how long to keep asking a busy gateway (your group at its job limit, or too many "
                         "streams) before giving up (default 300)")
    cu = csub.add_parser("upload", help="upload images (content addressed)")
    cu.add_argument("images", nargs="+", metavar="IMAGE")
    cj = csub.add_parser("jobs", help="list your jobs (a facility admin: everybody's), newest first")
    cj.add_argument("--limit", type=int, default=20, help="jobs per page")
    cj.add_argument("--page-token", default="", help="the token printed after the previous page")
    for name in ("status", "cancel", "delete"):
        x = csub.add_parser(name, help=f"{name} of a job")
        x.add_argument("job_id")
    cf = csub.add_parser("fetch", help="download a job's report")
    cf.add_argument("job_id")
    cf.add_argument("--out", required=True)
    from ..batch.remote import register_client  # `semforge client batch submit|status|cancel|fetch` (#12)

    register_client(csub)
    c.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ..client import GatewayClient
    from ..common.v1 import common_pb2

    if args.action == "analyze":
        check_inputs(args.images)
        return analyze_remote(RemoteAnalysis.from_args(args))
    state = common_pb2.JobState.Name
    with GatewayClient(args.server) as c:
        if args.action == "batch":
            from ..batch.remote import run_client

            return run_client(args, c)
        if args.action == "upload":
            check_inputs(args.images)
            for p in args.images:
                r = c.upload(p)
                print(f"{p}\t{r.image.ref.key}\t{r.image.width}x{r.image.height}\t"
                      f"{r.image.calibration.pixel_size_nm or 'uncalibrated'}")
        elif args.action == "jobs":
            jobs, token = c.list_jobs(page_size=args.limit, page_token=args.page_token)
            for j in jobs:
                print(f"{j.job_id}\t{state(j.state)}\t{j.images_done}/{j.images_total}\t{j.created_at}\t{j.message}")
            if token:
                print(f"# more: --page-token {token}")
        elif args.action == "delete":
            n = c.delete_job(args.job_id)
            print(f"{args.job_id}\tdeleted ({n} objects)")
        elif args.action == "status":
            j = c.get_job(args.job_id)
            print(f"{j.job_id}\t{state(j.state)}\t{j.images_done}/{j.images_total}\t{j.message}")
        elif args.action == "cancel":
            j = c.cancel_job(args.job_id)
            print(f"{j.job_id}\t{state(j.state)}")
        elif args.action == "fetch":
            j = c.get_job(args.job_id)
            files = c.download_outputs(j, args.out)
            print(f"{len(files)} file(s) -> {args.out}")
    return 0
