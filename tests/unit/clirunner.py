"""typer's CliRunner, but an app's click command is built once, not at every invoke.

typer.testing.CliRunner.invoke builds the click command of the Typer app anew each time:
it reads every command's signature and type hints again (~40 ms for daolictl), where
a real process (controller.cliutil.run_app) builds it once.  The command is the same
object either way; click makes a new context for every invocation.
"""

from __future__ import annotations

import functools
from typing import Any
from unittest import mock

import typer
import typer.testing

_command = functools.cache(typer.main.get_command)


class CliRunner(typer.testing.CliRunner):
    def invoke(self, app: typer.Typer, *args: Any, **kwargs: Any) -> typer.testing.Result:
        command = _command(app)
        with mock.patch.object(typer.testing, "_get_command", lambda _app: command):
            return super().invoke(app, *args, **kwargs)
