"""``semforge train classifier``: not in this build yet (the CNN shape classifier of issue #14 replaces this
module: ``run(args)`` gets the ``train`` command's arguments)."""

from __future__ import annotations

import argparse

from ._common import CliError


def run(args: argparse.Namespace) -> int:
    raise CliError("'semforge train classifier' is not available in this build yet (the CNN shape classifier "
                   "is being built); the rule-based classes are used meanwhile", 2)
