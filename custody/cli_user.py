"""`custody user ...` and `custody hub user ...`: the review site's users."""

from __future__ import annotations

from typing import Any


def add_parsers(sub: Any) -> None:
    """The station's `custody user` commands."""


def add_hub_parsers(hub_sub: Any) -> None:
    """The hub's `custody hub user` commands."""


__all__ = ["add_hub_parsers", "add_parsers"]
