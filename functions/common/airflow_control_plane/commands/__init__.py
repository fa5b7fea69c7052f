"""afctl subcommands: one module per area, each exposing ``COMMANDS``."""
