"""render service: headless Blender scenes.

The gRPC contract is served; the scene library (bpy) is the subject of its
own issue. Until it lands every call answers UNIMPLEMENTED with that reason,
and health reports the service as serving (it answers, it just cannot render).
"""

from __future__ import annotations

import grpc

from semforge.render.v1 import render_pb2, render_pb2_grpc
from semforge.rpc import ServiceConfig, build_server, configure_logging, serve_forever

_WHY = "rendering is not available in this build: the Blender scene library (bpy) is not installed yet"


class RenderServicer(render_pb2_grpc.RenderServiceServicer):
    def RenderScene(self, request, context):
        context.abort(grpc.StatusCode.UNIMPLEMENTED, _WHY)

    def RenderBatch(self, request, context):
        context.abort(grpc.StatusCode.UNIMPLEMENTED, _WHY)


def register(store=None):
    def add(server: grpc.Server):
        render_pb2_grpc.add_RenderServiceServicer_to_server(RenderServicer(), server)
        return [render_pb2.DESCRIPTOR.services_by_name["RenderService"].full_name]
    return add


def main() -> None:
    configure_logging()
    cfg = ServiceConfig.from_env()
    serve_forever([build_server("render", register(), cfg)], cfg.grace_s)


if __name__ == "__main__":
    main()
