"""
Small helpers shared by the tests.
"""

from __future__ import annotations

import tempfile

from twisted.python.filepath import FilePath
from twisted.trial.unittest import SynchronousTestCase


def temporaryPath(testCase: SynchronousTestCase) -> FilePath[str]:
    """
    @return: a path that does not exist yet, in a fresh directory removed
        after the test (unlike C{mktemp}, nothing is left in the working
        directory when pytest runs the test).
    """
    base = FilePath(tempfile.mkdtemp(prefix="gatewayd-test-"))
    testCase.addCleanup(base.remove)
    return base.child("path")
