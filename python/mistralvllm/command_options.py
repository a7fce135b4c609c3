"""What every `mistralvllm` subcommand shares: the ``--config`` option and
the turning of our errors into a one-line message."""

from __future__ import annotations

import functools
import sys
from collections.abc import Callable
from pathlib import Path
from typing import ParamSpec, TypeVar

import click
from rich.console import Console

from .errors import MistralVllmError

P = ParamSpec("P")
R = TypeVar("R")
config_option = click.option(
    "--config",
    "config_path",
    type=click.Path(dir_okay=False, path_type=Path),
    envvar="MISTRALVLLM_CONFIG",
    show_envvar=True,
    help="Config file (JSON); see `mistralvllm config schema`.",
)


def reports_errors(command: Callable[P, R]) -> Callable[P, R]:
    """Turn our errors into a one-line message and exit status 1."""

    @functools.wraps(command)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return command(*args, **kwargs)
        except MistralVllmError as e:
            Console(stderr=True).print(f"error: {e}", style="red", markup=False, highlight=False, soft_wrap=True)
            sys.exit(1)

    return wrapper
