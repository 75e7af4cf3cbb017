"""Interpreter settings for a long-running hookbay process (serve, worker, agent)."""

from __future__ import annotations

import gc
import sys


def tune_interpreter(switch_interval: float) -> None:
    """Call once start-up is done (modules imported, store open).

    The writer thread wakes for every commit; a short GIL switch interval lets it take the GIL
    from the event loop within ``switch_interval`` instead of the default 5 ms, which otherwise
    stalls acks.

    Everything alive now (modules, classes, the app) lives as long as the process; ``gc.freeze()``
    moves it out of the collector's reach. Otherwise each full (generation 2) collection walks
    those ~150,000 objects and holds the event loop for about 100 ms, finding nothing: under load
    that was every few seconds, the cause of most ack latency above 20 ms.
    """
    sys.setswitchinterval(switch_interval)
    gc.collect()
    gc.freeze()
