"""Host work off the event loop: pyroute2 and ovs-vsctl block, so the agent, the
attacher and the Docker plugin run them in a worker thread through `in_thread`."""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Callable
from concurrent.futures import Executor
from typing import Any, TypeVar

T = TypeVar("T")


async def in_thread(
    executor: Executor | None, fn: Callable[..., T], *args: Any, **kwargs: Any
) -> T:
    """`fn(*args, **kwargs)` on `executor` (None: the loop's default one)."""
    loop = asyncio.get_running_loop()
    return await loop.run_in_executor(executor, functools.partial(fn, *args, **kwargs))
