"""Reading Kamailio pseudo-variables from Python, one way for every KEMI module."""

from __future__ import annotations

import KSR  # provided by app_python3


class NotText(ValueError):
    """A SIP field that is not UTF-8 text: the sender's error (400), not ours (500)."""


def pv(name: str) -> str:
    """The variable's value as text ("" when unset); NotText when the message holds bytes that
    are not UTF-8 there."""
    try:
        value = KSR.pv.get(name)
    except UnicodeDecodeError as exc:
        raise NotText(name) from exc
    return "" if value is None else str(value)
