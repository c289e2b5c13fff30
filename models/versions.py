"""Kubernetes versions tenantctl supports, and the upgrade policy between them.

One place declares the supported range so the spec validator, the upgrade validator and the CLI
agree on it.
"""

from __future__ import annotations

import re
from typing import Annotated, Any, NamedTuple

from pydantic import AfterValidator, BeforeValidator

from models.errors import InvalidInput

_SEMVER = re.compile(r"^v?(0|[1-9]\d*)\.(0|[1-9]\d*)\.(0|[1-9]\d*)$")
_REPORTED = re.compile(r"^v?(0|[1-9]\d*)\.(0|[1-9]\d*)\.(0|[1-9]\d*)(?:[-+].*)?$")


class SemVer(NamedTuple):
    major: int
    minor: int
    patch: int

    @classmethod
    def parse(cls, text: str) -> SemVer:
        match = _SEMVER.match(text.strip())
        if not match:
            raise ValueError(f"'{text}' is not a semantic version MAJOR.MINOR.PATCH such as 1.32.4")
        return cls(*(int(part) for part in match.groups()))

    def __str__(self) -> str:
        return f"{self.major}.{self.minor}.{self.patch}"


def normalize_version(version: str) -> str:
    """The one spelling of a Kubernetes version in names, labels and tags: ``v1.32.4`` / ``1.32.4``
    -> ``1.32.4``; anything else is refused, naming the field."""
    try:
        return str(SemVer.parse(version))
    except ValueError as exc:
        raise InvalidInput(f"kubernetes_version: {exc}") from None


def reported_version(version: str) -> str:
    """A version as a kubelet or a server reports it (``v1.33.1``, ``v1.33.1+vendor``,
    ``v1.33.1-eks-1``) in the one spelling, ``1.33.1``; empty when it is no version at all."""
    match = _REPORTED.match(version.strip())
    return str(SemVer(*(int(part) for part in match.groups()))) if match else ""


# Supported Kubernetes minors, inclusive. Moving this window is a release decision: the oldest
# minor leaves when the newest arrives, as upstream supports three to four minors at a time.
MIN_SUPPORTED_MINOR = (1, 31)
MAX_SUPPORTED_MINOR = (1, 35)


def supported_range() -> str:
    lo, hi = MIN_SUPPORTED_MINOR, MAX_SUPPORTED_MINOR
    return f"{lo[0]}.{lo[1]}.0 to {hi[0]}.{hi[1]}.x"


def check_supported(version: SemVer) -> SemVer:
    if not MIN_SUPPORTED_MINOR <= (version.major, version.minor) <= MAX_SUPPORTED_MINOR:
        raise ValueError(f"Kubernetes {version} is outside the supported range {supported_range()}")
    return version


def _to_str(value: Any) -> Any:
    return str(value) if isinstance(value, SemVer) else value


def _validate(text: str) -> str:
    return str(check_supported(SemVer.parse(text)))


KubernetesVersion = Annotated[str, BeforeValidator(_to_str), AfterValidator(_validate)]
"""A supported Kubernetes version, normalised to ``MAJOR.MINOR.PATCH`` (a leading ``v`` is dropped)."""


def upgrade_refusal(current: str, target: str) -> str | None:
    """Why ``current`` may not be upgraded to ``target``, or None when the step is allowed.

    Policy: patch upgrades freely, minor upgrades one minor at a time, no downgrades, nothing
    outside the supported range. The same version is not an upgrade.
    """
    try:
        cur = SemVer.parse(current)
        tgt = SemVer.parse(target)
    except ValueError as exc:
        return str(exc)
    try:
        check_supported(tgt)
    except ValueError as exc:
        return str(exc)
    if tgt == cur:
        return f"the cluster already runs Kubernetes {cur}"
    if tgt < cur:
        return f"downgrades are not supported: {cur} -> {tgt}"
    if tgt.major != cur.major:
        return f"major version changes are not supported: {cur} -> {tgt}"
    if tgt.minor > cur.minor + 1:
        return (
            f"minor upgrades go one minor at a time: {cur} -> {tgt} skips "
            f"{tgt.minor - cur.minor - 1} minor(s); upgrade to {cur.major}.{cur.minor + 1}.x first"
        )
    return None
