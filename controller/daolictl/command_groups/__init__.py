"""daolictl's command groups, one module each: a typer app (or, for the top-level
commands connect, disconnect and trace, plain functions) that controller.daolictl.commands
assembles.  They import controller.daolictl's client, render and args and
controller.cliutil, nothing else of the controller."""
