"""Reading a whole cluster at once: the cyclic garbage collector paused while the objects are made.

A dump of 5,000 nodes and 50,000 pods is millions of dicts, lists and strings that live until the
command ends and hold no reference cycles. Python's cyclic GC is triggered by allocation counts, so
while they are made it walks the ever larger heap again and again: 2.0 of orjson's 2.5 s on a 70 MB
dump, and as much again while the pods are read and booked. `bulk_read` turns it off for that phase,
then freezes what was read (the collector never walks it again) and turns it back on for the
computation that follows. `gpupack report`, `gpupack explain` and `gpupack bench report` use it.
"""

from __future__ import annotations

import gc
from collections.abc import Iterator
from contextlib import contextmanager


@contextmanager
def bulk_read() -> Iterator[None]:
    """Reading a dump makes millions of objects that live until the command ends and hold no cycles:
    Python's cyclic GC would walk the growing heap again and again (it takes 2.0 of orjson's 2.5 s on a
    70 MB dump). So it is off while reading and building the picture; what was read is then frozen
    (never walked again) and collection resumes for what the computation makes."""
    was = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        gc.freeze()
        if was:
            gc.enable()
