"""The command-line layer: the `vidtwin` command and its subcommands. Nothing outside this package imports it."""
