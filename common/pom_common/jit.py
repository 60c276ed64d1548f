"""numba kernels compiled lazily, cached on disk when numba can write its cache, else in memory.

Every kernel module builds its kernels in a function ``build(cache)`` that it calls through
:func:`compiled` from a ``functools.cache``-d getter: nothing compiles at import, and a
read-only install (no writable ``__pycache__``, no ``NUMBA_CACHE_DIR``) still runs.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import TypeVar

logger = logging.getLogger(__name__)

T = TypeVar("T")


def compiled(build: Callable[..., T]) -> T:
    """``build(cache=True)``; ``build(cache=False)`` when numba has no writable cache folder for it."""
    try:
        return build(cache=True)
    except Exception as exc:  # numba raises RuntimeError when no cache locator is writable
        logger.debug("numba on-disk cache unavailable (%s); compiling in memory", exc)
        return build(cache=False)
