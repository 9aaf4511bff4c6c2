"""The ``context-synthesis`` command line: one module per subcommand, dispatched by :mod:`.main`."""

from .main import build_parser, configure_logging, main

__all__ = ["build_parser", "configure_logging", "main"]
