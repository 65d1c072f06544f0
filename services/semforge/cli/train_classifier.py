"""``semforge train classifier``: the CNN shape classifier of issue #14 (``run(args)`` gets the ``train`` command's
arguments; the training itself is :func:`semforge.classification.train.cli_train`)."""

from __future__ import annotations

import argparse

from ._common import CliError


def run(args: argparse.Namespace) -> int:
    from ..classification.train import cli_train

    try:
        return cli_train(args)
    except ValueError as exc:  # a bad configuration or data: one line, exit 2
        raise CliError(str(exc), 2) from None
