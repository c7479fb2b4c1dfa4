"""Thread limits for native libraries (OpenMP boosters, BLAS), cheap enough per request.

`threadpoolctl.threadpool_limits` scans every loaded shared library on each call (it reads
`/proc/self/maps`): about 5 ms, which is more than scoring one buyer costs. One
`ThreadpoolController` is built on first use (never at import) and reused; it is rebuilt
only when the library family asked for was not loaded yet when it was built.
"""

from __future__ import annotations

import threading
from contextlib import AbstractContextManager
from typing import Any, Literal

from threadpoolctl import ThreadpoolController

UserApi = Literal["openmp", "blas"]

_lock = threading.Lock()
_controller: ThreadpoolController | None = None


def limit_threads(threads: int, user_api: UserApi) -> AbstractContextManager[Any]:
    """A context in which `user_api` libraries use at most `threads` threads."""
    return _controller_with(user_api).limit(limits=threads, user_api=user_api)


def _controller_with(user_api: UserApi) -> ThreadpoolController:
    global _controller
    with _lock:
        if _controller is None or not _controller.select(user_api=user_api).lib_controllers:
            _controller = ThreadpoolController()
        return _controller
