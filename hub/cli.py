"""Subcommands of this part; registered by ``footfall.cli``."""

from __future__ import annotations

import argparse


def register(sub: argparse._SubParsersAction) -> None:
    """Add this part's subcommands to ``footfall``."""
