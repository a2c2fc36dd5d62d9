"""The ``ssmcompile`` command line: one module per subcommand, dispatched by ``main``.

Every subcommand module defines ``NAME``, ``HELP``, ``add_arguments(parser)``, ``run(args) ->
int`` (raising SSMCompileError for user errors) and a standalone ``main(argv) -> int``.
"""
