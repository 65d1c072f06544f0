"""The ``semforge`` command line: one module per command (``register(subparsers)``, ``run(args)``).

Exit codes: 0 success; 1 the analysis or job failed, or an internal error (a
bug: the message says how to report it); 2 bad input or usage (typed user
errors only; also NOT_FOUND, and UNAUTHENTICATED/PERMISSION_DENIED with how to
get and pass a token); 3 a server could not be reached (or stayed busy). Errors are one line on stderr,
never a traceback (set ``SEMFORGE_DEBUG=1`` for one).
"""

from __future__ import annotations

import argparse
import os
import sys

from . import adapt, analyze, client, evaluate, measure, render, run_services, train, translate
from ._common import CliError

__all__ = ["main", "build_parser", "CliError", "COMMANDS"]

#: command modules in help order
COMMANDS = (analyze, measure, run_services, client, render, train, translate, evaluate, adapt)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="semforge",
                                description="Particle size and shape statistics from electron micrographs.")
    from .. import __version__
    from ..batch import cli as batch_cli  # semforge batch ..., semforge worker (#12)
    from ..security import cli as admin_cli  # semforge admin token ... (#15)

    p.add_argument("--version", action="version", version=f"semforge {__version__}")
    sub = p.add_subparsers(dest="command", required=True)
    for cmd in COMMANDS:
        cmd.register(sub)
    batch_cli.register(sub)
    admin_cli.register(sub)
    return p


_PASS_TOKEN = ("pass it with SEMFORGE_TOKEN=<token>, SEMFORGE_TOKEN_FILE=<file> or the file "
               "~/.config/semforge/token ($SEMFORGE_HOME/token)")


def _token_hint(denied: bool) -> str:
    if denied:
        return f"your token may not do this: ask your facility admin for one that may, and {_PASS_TOKEN}"
    return ("the server needs a valid token: ask your facility admin for one (`semforge admin token issue "
            f"--user YOU --tenant GROUP`), then {_PASS_TOKEN}")


def exit_code(exc: BaseException) -> tuple[int, str]:
    """(exit code, one-line message) of an exception escaping a command."""
    import grpc

    from ..analysis import ImageDecodeError
    from ..errors import UserInputError
    from ..storage import InvalidKey, ObjectNotFound

    if isinstance(exc, CliError):
        return exc.code, str(exc)
    if isinstance(exc, grpc.RpcError) and hasattr(exc, "code"):
        code = exc.code()
        if code in (grpc.StatusCode.UNAUTHENTICATED, grpc.StatusCode.PERMISSION_DENIED):
            return 2, f"{code.name}: {exc.details()}; {_token_hint(code == grpc.StatusCode.PERMISSION_DENIED)}"
        rc = 3 if code == grpc.StatusCode.UNAVAILABLE else 2 if code in (
            grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.NOT_FOUND, grpc.StatusCode.RESOURCE_EXHAUSTED) else 1
        return rc, f"{code.name}: {exc.details()}"
    if isinstance(exc, (UserInputError, ImageDecodeError, InvalidKey, ObjectNotFound)):
        return 2, str(exc)
    if isinstance(exc, (FileNotFoundError, PermissionError, IsADirectoryError, NotADirectoryError)):
        return 2, str(exc)
    return 1, (f"internal error: {type(exc).__name__}: {exc} - this is a bug; please report it with the output "
               "of the same command run with SEMFORGE_DEBUG=1")


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        print("semforge: interrupted", file=sys.stderr)
        return 130
    except Exception as exc:  # noqa: BLE001 - one line, not a traceback
        if os.environ.get("SEMFORGE_DEBUG"):
            raise
        code, message = exit_code(exc)
        print(f"semforge: error: {message}", file=sys.stderr)
        return code


if __name__ == "__main__":
    sys.exit(main())
