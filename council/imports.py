"""numpy, imported by one thread at a time.

Two threads that import numpy at once can break it: the second sees a partially
initialised `numpy._core._multiarray_umath` and its import fails ("cannot import name
'__cpu_features__' from partially initialized module"), and with it whatever was importing
numpy (JAX: the specialist then fails to load, "ImportError: Encountered an error while
initializing the extension"). The language server has two such importers that start
together at `initialized`: the specialist's loader thread (JAX) and the workspace index
(its BM25 scoring, on the builder thread or on the event loop). Code that may be the first
to import numpy while the server runs takes it from here, so that first import happens
under one lock; later calls return at once.
"""

from __future__ import annotations

import sys
import threading
from types import ModuleType

_LOCK = threading.Lock()


def numpy() -> ModuleType:
    """The numpy module, imported under a process-wide lock the first time."""
    module = sys.modules.get("numpy")
    if module is not None and getattr(module, "ndarray", None) is not None:
        return module  # fully imported: no lock needed
    with _LOCK:
        import numpy as np

        return np
