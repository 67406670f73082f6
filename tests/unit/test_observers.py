"""
Tests for L{gatewayd.observers}.
"""

from twisted.logger import capturedLogs
from twisted.trial.unittest import SynchronousTestCase

from gatewayd.observers import Observers


class ObserversTests(SynchronousTestCase):
    def test_order(self) -> None:
        """
        Observers hear of a change in the order they were added, until
        removed (removing twice is harmless).
        """
        heard: list[tuple[str, int]] = []
        observers: Observers = Observers("a test")
        removeA = observers.add(lambda n: heard.append(("a", n)))
        observers.add(lambda n: heard.append(("b", n)))
        observers.notify(1)
        removeA()
        removeA()
        observers.notify(2)
        self.assertEqual(heard, [("a", 1), ("b", 1), ("b", 2)])

    def test_failingObserver(self) -> None:
        """
        An observer that raises is logged, and the others still hear.
        """
        heard: list[int] = []
        observers: Observers = Observers("a test")
        observers.add(lambda n: 1 / 0)
        observers.add(heard.append)
        with capturedLogs() as events:
            observers.notify(7)
        self.assertEqual(heard, [7])
        self.assertEqual(len(self.flushLoggedErrors(ZeroDivisionError)), 1)
        self.assertTrue(any("a test" in str(e.get("what")) for e in events))
