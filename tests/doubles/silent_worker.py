#!/usr/bin/env python3
"""TEST DOUBLE: a worker that starts and never becomes healthy.

It stands in for the engine's interpreter (engine.python=<this file>): it accepts any argv,
opens no port and waits until it is signalled, so readiness deadlines can be tested for real.
"""

import signal
import sys

print("silent worker double started with", " ".join(sys.argv[1:]), flush=True)
signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
signal.pause()
