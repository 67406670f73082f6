# -*- test-case-name: tests.unit.test_observers -*-
"""
A list of observers: the one way gatewayd's parts report changes upward.
"""

from __future__ import annotations

from typing import Any, Callable, Generic, ParamSpec

from twisted.logger import Logger

P = ParamSpec("P")


class Observers(Generic[P]):
    """
    Callables told of every change, in the order they were added. One that
    raises is logged and does not stop the others.

    @ivar what: what the observers watch, for the log.
    """

    log = Logger()

    def __init__(self, what: str) -> None:
        self.what = what
        self._observers: list[Callable[P, Any]] = []

    def add(self, observer: Callable[P, Any]) -> Callable[[], None]:
        """
        @return: a callable that removes C{observer}; calling it twice is
            harmless.
        """
        self._observers.append(observer)

        def remove() -> None:
            if observer in self._observers:
                self._observers.remove(observer)

        return remove

    def notify(self, *args: P.args, **kwargs: P.kwargs) -> None:
        for observer in list(self._observers):
            try:
                observer(*args, **kwargs)
            except Exception:
                self.log.failure(
                    "An observer of {what} failed: {observer!r}", what=self.what, observer=observer
                )

    def __len__(self) -> int:
        return len(self._observers)
