"""The rotation timing rule: with ``renew_before = ttl - interval/2`` and runs on a fixed grid, no
certificate expires before a run renews it, for every interval the spec accepts.

A run renews a leaf once it is at least interval/2 old; a leaf issued just before a run (at create,
or by an on-demand rotation) is renewed by the run after, up to 1.5 intervals after its issue.
"""

from __future__ import annotations

from datetime import timedelta

import pytest

from models.spec import SpecError, parse_spec
from tests.specs import example

STEPS = 240


def renewal_age(ttl: timedelta, interval: timedelta, renew_before: timedelta) -> timedelta:
    """The oldest a leaf gets before a run renews it, over every phase of the run grid."""
    worst = timedelta(0)
    for step in range(1, STEPS + 1):
        run = interval * step / STEPS  # the first run after the issue
        while ttl - run > renew_before:  # not due yet: the next run
            run += interval
        worst = max(worst, run)
    return worst


@pytest.mark.parametrize(("ttl", "interval"), [("72h", "24h"), ("72h", "47h"), ("24h", "12h"), ("1h", "39m")])
def test_every_accepted_interval_renews_before_expiry(ttl: str, interval: str) -> None:
    spec = example(id="timing", certificates={"ttl": ttl, "rotation_interval": interval})
    certificates = spec.certificates
    oldest = renewal_age(certificates.ttl, certificates.rotation_interval, certificates.renew_before)
    assert oldest < certificates.ttl
    assert oldest <= certificates.rotation_interval * 3 / 2


def test_an_interval_that_would_let_certificates_expire_is_refused() -> None:
    # TTL 72h rotated every 60h: a leaf issued just before a run would be renewed at 90h.
    assert renewal_age(timedelta(hours=72), timedelta(hours=60), timedelta(hours=42)) > timedelta(hours=72)
    with pytest.raises(SpecError, match="must be under 2/3 of ttl"):
        parse_spec({**example().model_dump(mode="json"), "certificates": {"ttl": "72h", "rotation_interval": "60h"}})
