"""`lowbit` command line: a thin argparse layer over the Python API.

Each module in `lowbit.commands` defines `register(subparsers)` (adding its subcommand with `func=run`) and
`run(args) -> int`; they are discovered automatically, so adding a command is adding a module.
"""
from __future__ import annotations

import argparse
import importlib
import pkgutil
import sys

from lowbit.errors import LowbitError


def build_parser() -> argparse.ArgumentParser:
    import lowbit.commands as commands

    parser = argparse.ArgumentParser(prog="lowbit", description="4- and 8-bit quantization of transformer models")
    parser.add_argument("--version", action="version", version=f"lowbit {__import__('lowbit').__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for info in sorted(pkgutil.iter_modules(commands.__path__), key=lambda i: i.name):
        module = importlib.import_module(f"lowbit.commands.{info.name}")
        if hasattr(module, "register"):
            module.register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except LowbitError as e:
        print(f"lowbit {args.command}: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
