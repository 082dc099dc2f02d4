"""``footfall``: one command, a subcommand per step of the data flow.

Each part registers its own subcommands (``edge_agent/cli.py``, ``hub/cli.py``,
``tools/cli.py``, ...), so the CLI mirrors the library and no part edits another's parser.
Parts whose optional dependencies are not installed (a sensor has no hub extras) simply
do not register.
"""

from __future__ import annotations

import argparse
import getpass
import importlib
import logging
import sys

from footfall import __version__

PARTS = (
    "footfall.edge_agent.cli",
    "footfall.hub.cli",
    "footfall.cloud_sync.cli",
    "footfall.tools.cli",
)


def read_password(from_stdin: bool) -> str:
    """A new password: one line of stdin (scripts), or typed twice at a prompt."""
    if from_stdin:
        return sys.stdin.readline().rstrip("\n")
    first = getpass.getpass("Password: ")
    if first != getpass.getpass("Repeat password: "):
        raise SystemExit("passwords differ")
    return first


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="footfall", description="Wi-Fi presence analytics: capture -> visit -> hub -> segment -> sync."
    )
    parser.add_argument("--version", action="version", version=f"footfall {__version__}")
    parser.add_argument("-v", "--verbose", action="count", default=0, help="more logging (-vv for debug)")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in PARTS:
        try:
            module = importlib.import_module(name)
        except ImportError as exc:
            if name == "footfall.edge_agent.cli":
                # Every install has the agent: its import failing is a broken install (a
                # sensor missing an OpenWrt package), not a missing extra. Without this the
                # operator would read "invalid choice: 'agent'".
                agent_broken(exc)
            # A sensor install lacks the hub's extras: its commands are simply absent.
            logging.getLogger(__name__).debug("part %s not available: %s", name, exc)
            continue
        module.register(sub)
    return parser


def agent_broken(exc: ImportError) -> None:
    """Exit with one line saying which module the agent lacks and which package provides it."""
    from footfall.edge_agent import preflight

    preflight.require()  # names the package when it is one the preflight knows
    raise SystemExit(f"footfall: the sensor agent cannot be imported: {exc}")


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    level = logging.WARNING - 10 * min(args.verbose, 2)
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    result = args.func(args)
    return int(result or 0)


if __name__ == "__main__":
    sys.exit(main())
