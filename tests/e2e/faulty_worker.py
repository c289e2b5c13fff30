"""``python -m tests.e2e.faulty_worker``: the real worker, except that the activities named in
``TENANTCTL_TEST_FAIL_ACTIVITIES`` (comma-separated) fail permanently, as a backend refusing for
good would make them. Lets end-to-end tests stop a create after any of its steps."""

from __future__ import annotations

import asyncio
import logging
import os
from typing import Any

from temporalio import activity
from temporalio.exceptions import ApplicationError
from temporalio.worker import ActivityInboundInterceptor, ExecuteActivityInput, Interceptor

from config.settings import load_settings
from models.errors import InvalidInput
from worker.__main__ import serve

FAIL_ENV = "TENANTCTL_TEST_FAIL_ACTIVITIES"


class FailActivities(Interceptor):
    def __init__(self, names: set[str]) -> None:
        self.names = names

    def intercept_activity(self, next: ActivityInboundInterceptor) -> ActivityInboundInterceptor:
        return _FailNamed(next, self.names)


class _FailNamed(ActivityInboundInterceptor):
    def __init__(self, next: ActivityInboundInterceptor, names: set[str]) -> None:
        super().__init__(next)
        self.names = names

    def execute_activity(self, input: ExecuteActivityInput) -> Any:
        name = activity.info().activity_type
        if name in self.names:
            raise ApplicationError(
                f"injected permanent failure of {name}", type=InvalidInput.__name__, non_retryable=True
            )
        return self.next.execute_activity(input)


def main() -> None:
    settings = load_settings()
    logging.basicConfig(level=settings.log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    names = {n.strip() for n in os.environ.get(FAIL_ENV, "").split(",") if n.strip()}
    logging.getLogger("tenantctl.worker").info("failing activities permanently: %s", sorted(names))
    asyncio.run(serve(settings, interceptors=[FailActivities(names)]))


if __name__ == "__main__":
    main()
