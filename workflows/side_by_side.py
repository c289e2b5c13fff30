"""Running a runbook's independent calls side by side."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from typing import Any


async def together(*calls: Awaitable[Any]) -> list[Any]:
    """Run ``calls`` side by side until every one has ended, then raise the first failure, if any.

    Nothing is cancelled when one fails: the operation fails (or pauses) with nothing of it still
    running, and the status records how every step ended. The calls are short or are waits with the
    same deadline. (Cancelling an activity that ended in the same workflow task is also refused by
    the server.)
    """
    results = await asyncio.gather(*calls, return_exceptions=True)
    for result in results:
        if isinstance(result, BaseException):
            raise result
    return results
