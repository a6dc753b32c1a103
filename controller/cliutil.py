"""Run a typer app so that every failure is one line on stderr and exit code 1, and
read the secret files the commands are given.

Shared by daolinet-controller, daolinet-hostnet and daolictl: a bad flag, a domain
error or an unexpected exception never shows a traceback or a usage box.
"""

from __future__ import annotations

import sys
from pathlib import Path

import typer
from typer.exceptions import TyperException


class CliError(Exception):
    """A failure to report as one line on stderr, exit code 1 (no traceback): what
    every console script raises for a bad option value or an unreachable service."""


def read_secret(path: Path, what: str) -> str:
    """The content of a secret file (a token), stripped; a ValueError naming `what` and
    the path when it cannot be read or is empty (an empty token would let no one in, or
    anyone)."""
    try:
        secret = path.read_text().strip()
    except OSError as exc:
        raise ValueError(f"cannot read {what} {path}: {exc.strerror or exc}") from None
    if not secret:
        raise ValueError(f"{what} {path} is empty")
    return secret


def run_app(
    app: typer.Typer,
    prog: str,
    argv: list[str] | None = None,
    known: tuple[type[Exception], ...] = (),
) -> int:
    """Run `app`; a CliError, and the `known` errors, print their message as it is."""
    command = typer.main.get_command(app)
    reported: tuple[type[Exception], ...] = (CliError, *known)
    try:
        result = command.main(
            args=sys.argv[1:] if argv is None else argv, prog_name=prog, standalone_mode=False
        )
    except typer.Exit as exc:
        return int(exc.exit_code)
    except TyperException as exc:
        if type(exc).__name__ == "NoArgsIsHelpError":
            msg = "missing command (try --help)"
        else:
            msg = " ".join(exc.format_message().split())
        print(f"{prog}: error: {msg}", file=sys.stderr)
        return 1
    except typer.Abort:
        print(f"{prog}: aborted", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    except reported as exc:
        print(f"{prog}: error: {exc}", file=sys.stderr)
        return 1
    except Exception as exc:  # never a traceback
        print(f"{prog}: error: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1
    return int(result) if isinstance(result, int) else 0
