"""The run's clock and its progress lines on stderr."""

import sys
import time

STARTED = time.monotonic()


def log(msg, *args):
    print('[%6.1fs] %s' % (time.monotonic() - STARTED, msg % args),
          file=sys.stderr, flush=True)


def describe(error):
    """An error in one line: its class and the first line of its text."""
    lines = str(error).strip().splitlines()
    return '%s: %s' % (type(error).__name__, lines[0] if lines else '')
