"""CLI subcommands, one module each (discovered by lowbit.cli)."""
