"""``semforge admin``: issue, revoke and list bearer tokens (facility admin, on the token registry file).

Wire it into the CLI with ``register(subparsers)``; ``run(args)`` returns the exit code.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from ._tokens import Role, TokenRegistry, semforge_home

__all__ = ["register", "run"]


def _registry(args) -> TokenRegistry:
    return TokenRegistry(args.tokens or os.environ.get("SEMFORGE_TOKENS") or semforge_home() / "tokens.json")


def register(subparsers) -> argparse.ArgumentParser:
    a = subparsers.add_parser("admin", help="facility admin: bearer tokens (issue, revoke, list)")
    a.add_argument("--tokens", help="token registry file (default $SEMFORGE_TOKENS or $SEMFORGE_HOME/tokens.json)")
    asub = a.add_subparsers(dest="admin_area", required=True)
    t = asub.add_parser("token", help="bearer tokens, hashed at rest")
    tsub = t.add_subparsers(dest="token_action", required=True)
    i = tsub.add_parser("issue", help="create a token for a user or an instrument PC (printed once)")
    i.add_argument("--user", required=True, help="user or instrument name (letters, digits, ._@-)")
    i.add_argument("--tenant", required=True, help="tenant (group/project) the token belongs to")
    i.add_argument("--role", choices=[Role.USER.value, Role.ADMIN.value], default=Role.USER.value,
                   help="user (own tenant) or admin (facility admin: every tenant)")
    i.add_argument("--kind", choices=["user", "instrument"], default="user")
    i.add_argument("--note", default="", help="free text kept with the record (e.g. the PC's inventory id)")
    i.add_argument("--out", help="write the token to this file (mode 0600) instead of printing it")
    r = tsub.add_parser("revoke", help="revoke a token by id (takes effect on the next call)")
    r.add_argument("token_id")
    ls = tsub.add_parser("list", help="list tokens (ids and owners; never the secrets)")
    ls.add_argument("--json", action="store_true")
    a.set_defaults(func=run)
    return a


def run(args) -> int:
    reg = _registry(args)
    if args.token_action == "issue":
        try:
            token, rec = reg.issue(args.user, args.tenant, role=args.role, kind=args.kind, note=args.note)
        except ValueError as exc:
            sys.stderr.write(f"error: {exc}\n")
            return 2
        if args.out:
            out = Path(args.out)
            fd = os.open(out, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(fd, "w") as fh:
                fh.write(token + "\n")
            sys.stderr.write(f"token {rec.id} for {rec.user}@{rec.tenant} ({rec.role}) written to {out}\n")
        else:
            sys.stderr.write(f"token {rec.id} for {rec.user}@{rec.tenant} ({rec.role}); shown once, store it now:\n")
            print(token)
        return 0
    if args.token_action == "revoke":
        try:
            rec = reg.revoke(args.token_id)
        except KeyError as exc:
            sys.stderr.write(f"error: {exc.args[0]}\n")
            return 1
        print(f"revoked {rec.id} ({rec.user}@{rec.tenant}) at {rec.revoked}")
        return 0
    recs = reg.records()
    if args.json:
        print(json.dumps([r.public() for r in recs], indent=1))
    else:
        print(f"{'id':12s}  {'user':16s} {'tenant':16s} {'role':6s} {'kind':10s} {'created':25s} revoked")
        for r in recs:
            print(f"{r.id:12s}  {r.user:16s} {r.tenant:16s} {r.role:6s} {r.kind:10s} {r.created:25s} {r.revoked or '-'}")
    return 0


def main(argv: list[str] | None = None) -> int:
    """``python -m semforge.security.cli token issue ...`` until the command is wired into ``semforge``."""
    ap = argparse.ArgumentParser(prog="semforge")
    register(ap.add_subparsers(dest="cmd", required=True))
    args = ap.parse_args(["admin", *(sys.argv[1:] if argv is None else argv)])
    return run(args)


if __name__ == "__main__":
    sys.exit(main())
