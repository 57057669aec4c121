"""A stand-in for Kamailio's KSR module, so the KEMI callbacks run in a unit test.

Every ``KSR.<module>.<function>(...)`` call is recorded in ``calls`` and answers what the test
set in ``answers`` (by "module.function", or by "function" for KSR's own), else 1. Pseudo-
variables live in ``vars`` (a dict): ``KSR.pv.get`` reads it, ``sets``/``seti`` write it. Replies
sent (sl, tm) are collected in ``replies``.
"""

from __future__ import annotations

import sys
import types
from collections.abc import Callable
from typing import Any

_REPLIES = {"sl.send_reply", "sl.sl_send_reply", "tm.t_reply"}


class _Module:
    def __init__(self, ksr: FakeKSR, name: str) -> None:
        self._ksr = ksr
        self._name = name

    def __getattr__(self, function: str) -> Callable[..., Any]:
        key = f"{self._name}.{function}"

        def call(*args: Any) -> Any:
            self._ksr.calls.append((key, args))
            if key in _REPLIES:
                self._ksr.replies.append((int(args[0]), str(args[1])))
            answer = self._ksr.answers.get(key, 1)
            return answer(*args) if callable(answer) else answer

        return call


class _Pv:
    def __init__(self, ksr: FakeKSR) -> None:
        self._ksr = ksr

    def get(self, name: str) -> Any:
        return self._ksr.vars.get(name)

    def sets(self, name: str, value: str) -> None:
        self._ksr.vars[name] = value

    def seti(self, name: str, value: int) -> None:
        self._ksr.vars[name] = value


class FakeKSR(types.ModuleType):
    def __init__(self) -> None:
        super().__init__("KSR")
        self.reset()

    def reset(self) -> None:
        self.calls: list[tuple[str, tuple[Any, ...]]] = []
        self.replies: list[tuple[int, str]] = []
        self.answers: dict[str, Any] = {}
        self.vars: dict[str, Any] = {}
        self.logged: list[str] = []

    def __getattr__(self, name: str) -> Any:
        if name.startswith("__"):
            raise AttributeError(name)
        if name in ("err", "warn", "info", "dbg", "notice", "crit"):
            return self.logged.append
        if name.startswith("is_") or name in ("set_drop", "drop", "forward", "x"):
            def call(*args: Any) -> Any:
                self.calls.append((name, args))
                answer = self.answers.get(name, -1 if name.startswith("is_") else 1)
                return answer(*args) if callable(answer) else answer
            return call
        return _Module(self, name)


def install() -> FakeKSR:
    """Put the fake in sys.modules as ``KSR`` (before kemi is imported) and return it."""
    existing = sys.modules.get("KSR")
    if isinstance(existing, FakeKSR):
        return existing
    fake = FakeKSR()
    sys.modules["KSR"] = fake
    return fake


class _PvAttr:
    """``KSR.pv``: the pseudo-variable accessor."""

    def __get__(self, obj: FakeKSR | None, owner: type) -> Any:
        return _Pv(obj) if obj is not None else self


FakeKSR.pv = _PvAttr()  # type: ignore[attr-defined]
