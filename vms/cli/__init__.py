"""The command line: `vms` (typer + rich)."""

from vms.cli.main import main

__all__ = ["main"]
