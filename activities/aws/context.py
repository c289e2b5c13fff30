"""What every AWS provider step shares: one call's clients, error translation, lookups, waits.

Every AWS call goes through ``call``/``do``: an error code the caller expects (usually "not
found") becomes None, anything else is translated by ``activities.common.errors.classify`` (access denied
-> Forbidden, invalid parameters -> InvalidInput, limits -> QuotaExceeded) or raised as it is, to
be retried (throttling and 5xx, after botocore's own retries).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final, TypeVar, cast

from botocore.exceptions import ClientError
from temporalio import activity

from activities.aws import resources
from activities.aws.resources import Kind
from activities.common.errors import classify
from activities.common.waits import WaitBudget
from models.errors import NotReady
from models.naming import CLUSTER_LABEL, ROLE_LABEL
from models.provider import ResourceChange, ResourceOutcome
from models.spec import ClusterSpec

if TYPE_CHECKING:
    from mypy_boto3_ec2 import EC2Client
    from mypy_boto3_elbv2 import ElasticLoadBalancingv2Client
    from mypy_boto3_iam import IAMClient
    from mypy_boto3_route53 import Route53Client
    from mypy_boto3_s3 import S3Client

T = TypeVar("T")
Obj = dict[str, Any]

NOT_FOUND: Final = frozenset(
    {
        "InvalidVpcID.NotFound",
        "InvalidSubnetID.NotFound",
        "InvalidInternetGatewayID.NotFound",
        "InvalidRouteTableID.NotFound",
        "InvalidAssociationID.NotFound",
        "InvalidAllocationID.NotFound",
        "NatGatewayNotFound",
        "InvalidNatGatewayID.NotFound",
        "InvalidGroup.NotFound",
        "InvalidGroupId.NotFound",
        "InvalidLaunchTemplateName.NotFoundException",
        "InvalidLaunchTemplateId.NotFound",
        "InvalidInstanceID.NotFound",
        "Gateway.NotAttached",
        "LoadBalancerNotFound",
        "TargetGroupNotFound",
        "ListenerNotFound",
        "NoSuchEntity",
        "NoSuchBucket",
        "NoSuchKey",
        "NoSuchTagSet",
        "NoSuchTagSetError",
        "404",
        "NotFound",
        "NoSuchHostedZone",
        "ServerSideEncryptionConfigurationNotFoundError",
        "NoSuchPublicAccessBlockConfiguration",
    }
)
"""Error codes that mean "not there": an absent op is done, a lookup found nothing."""
STILL_IN_USE: Final = frozenset(
    {"DependencyViolation", "ResourceInUse", "InvalidIPAddress.InUse", "DeleteConflict", "IncorrectState"}
)
"""AWS refuses a deletion until something else is gone (ENIs of a load balancer, instances): wait."""
_CHANGE_RANK: Final = {
    ResourceChange.UNCHANGED: 0,
    ResourceChange.ABSENT: 0,
    ResourceChange.UPDATED: 1,
    ResourceChange.DELETED: 1,
    ResourceChange.CREATED: 2,
}


def code(exc: ClientError) -> str:
    return str(exc.response.get("Error", {}).get("Code", ""))


def message(exc: ClientError) -> str:
    return str(exc.response.get("Error", {}).get("Message", ""))


def call(what: str, fn: Callable[..., T], /, *, ok: Iterable[str] = (), **kwargs: Any) -> T | None:
    """One AWS call; None when it fails with a code in ``ok``; otherwise its error, translated."""
    try:
        return fn(**kwargs)
    except ClientError as exc:
        if code(exc) in set(ok):
            return None
        mapped = classify(exc, what)
        if mapped is exc:
            raise
        raise mapped from exc


def do(what: str, fn: Callable[..., T], /, **kwargs: Any) -> T:
    """One AWS call that must succeed (its error translated)."""
    result = call(what, fn, **kwargs)
    if result is None:  # only a call that tolerates codes returns None; this one tolerates none
        raise NotReady(f"{what}: AWS returned nothing")
    return result


def worse(a: ResourceChange, b: ResourceChange) -> ResourceChange:
    """The bigger of two changes, for a resource that several steps converge."""
    return a if _CHANGE_RANK[a] >= _CHANGE_RANK[b] else b


def changed(flag: bool) -> ResourceChange:
    return ResourceChange.UPDATED if flag else ResourceChange.UNCHANGED


def outcome(kind: Kind, name: str, change: ResourceChange) -> ResourceOutcome:
    return ResourceOutcome(kind=kind.value, name=name, change=change)


def filters(spec: ClusterSpec, part: str | None = None, **tag_values: str) -> list[Any]:
    """EC2 filters: tagged for the cluster (and with this role tag and these tag values)."""
    found: list[Any] = [{"Name": f"tag:{CLUSTER_LABEL}", "Values": [spec.id]}]
    if part is not None:
        found.append({"Name": f"tag:{ROLE_LABEL}", "Values": [part]})
    found += [{"Name": f"tag:{key}", "Values": [value]} for key, value in tag_values.items()]
    return found


def tagged_as(item: Obj, where: list[Any]) -> bool:
    """Whether an item carries the tags its filters asked for, checked again on our side: moto's
    ``DescribeNatGateways`` ignores tag filters and returns every NAT gateway of the region, and a
    lookup must never adopt another cluster's resource. Items without tags of their own
    (reservations) are checked by their callers."""
    if "Tags" not in item and "Instances" in item:
        return True
    tags = resources.tag_dict(item.get("Tags"))
    for condition in where:
        name, values = str(condition["Name"]), condition["Values"]
        if name.startswith("tag:") and tags.get(name.removeprefix("tag:")) not in values:
            return False
        if name == "tag-key" and not any(key in tags for key in values):
            return False
    return True


def name_of(item: Obj, id_key: str) -> str:
    """A resource's Name tag, else its AWS id."""
    return resources.tag_dict(item.get("Tags")).get(resources.NAME_TAG) or str(item[id_key])


@dataclass(frozen=True)
class AwsContext:
    """One activity call's view of a cluster: its spec, the clients of its region, how to wait."""

    spec: ClusterSpec
    region: str
    account: str
    partition: str
    secrets_region: str
    ec2: EC2Client
    elb: ElasticLoadBalancingv2Client
    s3: S3Client
    iam: IAMClient
    route53: Route53Client
    poll_interval: float
    instance_timeout: float
    delete_timeout: float

    @property
    def id(self) -> str:
        return self.spec.id

    @property
    def bucket(self) -> str:
        return resources.bucket_name(self.spec.id, self.account, self.region)

    # --- EC2 lookups -----------------------------------------------------------------------------
    def describe(self, operation: str, key: str, where: list[Any], param: str = "Filters") -> list[Obj]:
        """Every item of an EC2 describe call with these filters, across pages."""
        client = cast(Any, self.ec2)
        what = f"{operation.replace('_', ' ')} of cluster {self.id}"
        if client.can_paginate(operation):
            pages = client.get_paginator(operation).paginate(**{param: where})
            items = [item for page in do(what, lambda: list(pages)) for item in page[key]]
        else:
            items = list(do(what, getattr(client, operation), **{param: where})[key])
        return [item for item in items if tagged_as(item, where)]

    def one(self, kind: Kind, name: str, items: list[Obj], id_key: str) -> Obj | None:
        """The resource a lookup found; of duplicates (concurrent attempts), the lowest id."""
        if len(items) > 1:
            activity.logger.warning(
                "%s %s exists %d times (%s): using the first", kind.value, name, len(items), [i[id_key] for i in items]
            )
        return sorted(items, key=lambda i: str(i[id_key]))[0] if items else None

    def converge_tags(self, resource_id: str, live: Sequence[Any] | None, desired: dict[str, str]) -> bool:
        """Add or correct the desired tags of an EC2 resource (others' tags are kept)."""
        missing = resources.missing_tags(resources.tag_dict(list(live or [])), desired)
        if missing:
            do(f"tag {resource_id}", self.ec2.create_tags, Resources=[resource_id], Tags=resources.tag_list(missing))
        return bool(missing)

    # --- waiting ---------------------------------------------------------------------------------
    def wait(self, what: str, pending: Callable[[], str | None], timeout: float) -> None:
        """Look at ``pending`` (what is still awaited, None when done), heartbeating, until
        ``timeout`` or the end of this attempt; then fail retryably, naming what is left (the
        next attempt waits again). The shared wait budget (``activities.common.waits``)."""
        budget = WaitBudget(timeout, max_poll=self.poll_interval, resume=False)
        while True:
            left = pending()
            if left is None:
                return
            budget.heartbeat(waiting_for=what, pending=left)
            if budget.expired:
                raise NotReady(f"waited {budget.waited:.0f}s for {what}: still {left}; checked again on retry")
            budget.sleep(f"waiting for {what}")

    def delete_when_free(self, what: str, delete: Callable[[], object]) -> None:
        """Run ``delete`` until AWS stops refusing it because something still uses the resource."""

        def attempt() -> str | None:
            try:
                delete()
            except ClientError as exc:
                if code(exc) in STILL_IN_USE:
                    return f"{code(exc)}: {message(exc)}"
                raise
            return None

        self.wait(f"{what} to be deleted", attempt, self.delete_timeout)
