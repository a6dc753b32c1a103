"""daolictl, the operator's CLI: a client of the REST API only (imports nothing of the
controller's runtime; controller.cliutil is its one shared piece).

`commands` assembles the command groups (`command_groups/`, one module each) on top of
`client` (the HTTP client), `render` (tables and JSON) and `args` (shared options and
their parsing).
"""
