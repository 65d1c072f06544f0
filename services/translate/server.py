"""translate service: CycleGAN height map -> SEM image.

The gRPC contract is served; no generator has been trained yet (its own
issue), so every call answers UNIMPLEMENTED with that reason.
"""

from __future__ import annotations

import grpc

from semforge.rpc import ServiceConfig, build_server, configure_logging, serve_forever
from semforge.translate.v1 import translate_pb2, translate_pb2_grpc

_WHY = "translation is not available in this build: no CycleGAN generator is installed in models_repo/ yet"


class TranslateServicer(translate_pb2_grpc.TranslateServiceServicer):
    def Translate(self, request, context):
        context.abort(grpc.StatusCode.UNIMPLEMENTED, _WHY)


def register(store=None):
    def add(server: grpc.Server):
        translate_pb2_grpc.add_TranslateServiceServicer_to_server(TranslateServicer(), server)
        return [translate_pb2.DESCRIPTOR.services_by_name["TranslateService"].full_name]
    return add


def main() -> None:
    configure_logging()
    cfg = ServiceConfig.from_env()
    serve_forever([build_server("translate", register(), cfg)], cfg.grace_s)


if __name__ == "__main__":
    main()
