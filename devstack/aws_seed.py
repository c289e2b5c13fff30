"""What the local stack's moto needs before an AWS cluster can be made: the node AMIs.

moto starts empty (and forgets everything on restart), while the AWS provider finds a node's AMI
by name, ``<aws.ami_name_prefix>-<kubernetes version>``, owned by the account itself, as a real
platform would build them (Packer, image pipelines). ``seed_amis`` registers one such image per
version, idempotently: an image of that name is found first and kept.

moto only: ``register_image`` without a snapshot is what moto accepts and real EC2 refuses.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING

from models.versions import MAX_SUPPORTED_MINOR, MIN_SUPPORTED_MINOR, normalize_version

if TYPE_CHECKING:
    from mypy_boto3_ec2 import EC2Client

DEFAULT_PREFIX = "tenantctl-node"


def seed_amis(ec2: EC2Client, prefix: str, versions: Iterable[str]) -> dict[str, str]:
    """Register ``<prefix>-<version>`` for each version (``v1.32.4`` and ``1.32.4`` are one);
    returns version -> AMI id, including the ones that existed already (one lookup for all)."""
    wanted = {f"{prefix}-{normalize_version(v)}": normalize_version(v) for v in versions}
    found = ec2.describe_images(Owners=["self"], Filters=[{"Name": "name", "Values": sorted(wanted)}])["Images"]
    images: dict[str, str] = {}
    for image in sorted(found, key=lambda i: str(i["ImageId"]), reverse=True):
        images[wanted[str(image["Name"])]] = str(image["ImageId"])  # the oldest id wins
    for name, version in wanted.items():
        if version in images:
            continue
        registered = ec2.register_image(
            Name=name,
            Description=f"tenantctl node image, Kubernetes v{version} (local stack stand-in)",
            Architecture="x86_64",
            RootDeviceName="/dev/xvda",
            VirtualizationType="hvm",
            EnaSupport=True,
        )
        images[version] = str(registered["ImageId"])
    return images


def local_stack_versions(patches: int = 16) -> list[str]:
    """Every version the local stack offers an AMI for: each supported minor, patches 0..patches-1."""
    (major, low), (_, high) = MIN_SUPPORTED_MINOR, MAX_SUPPORTED_MINOR
    return [f"{major}.{minor}.{patch}" for minor in range(low, high + 1) for patch in range(patches)]
