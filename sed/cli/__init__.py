"""The ``sedkit`` command: :func:`sed.cli.main.main` (parser, exit codes, reports) and one module per verb
group."""
