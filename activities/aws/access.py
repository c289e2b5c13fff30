"""What nodes may read and where it lives: IAM roles and instance profiles, the cloud-config bucket.

Each node role gets ``tenantctl-<id>-<role>`` (role and instance profile): it reads its own
role's key pairs from Secrets Manager and its own role's cloud-configs from the cluster's bucket,
nothing else (a worker never reads the API server's or etcd's keys).
"""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import unquote

from botocore.exceptions import ClientError

from activities.aws import resources
from activities.aws.context import NOT_FOUND, AwsContext, call, code, do, outcome, worse
from activities.aws.resources import Kind, Part
from models.errors import Conflict, Forbidden, MissingPrerequisite
from models.naming import CLUSTER_LABEL, ROLE_LABEL
from models.provider import ResourceChange, ResourceOutcome


def bucket_exists(c: AwsContext, name: str) -> bool:
    try:
        return call(f"read bucket {name}", c.s3.head_bucket, ok=NOT_FOUND, Bucket=name) is not None
    except ClientError as exc:
        if code(exc) == "403":  # HEAD has no body, so no AccessDenied code: say what it can mean
            raise Forbidden(
                f"bucket {name}: AWS answered 403 (it belongs to another account, or this worker may not read it)"
            ) from exc
        raise


def ensure_bucket(c: AwsContext, outcomes: list[ResourceOutcome]) -> str:
    """The cluster's cloud-config bucket: private, encrypted, tagged."""
    name = c.bucket
    change = ResourceChange.UNCHANGED
    if not bucket_exists(c, name):
        options: dict[str, Any] = {"Bucket": name, "ObjectOwnership": "BucketOwnerEnforced"}
        if c.region != "us-east-1":  # the one region that refuses its own name as a constraint
            options["CreateBucketConfiguration"] = {"LocationConstraint": c.region}
        try:
            call(f"create bucket {name}", c.s3.create_bucket, ok={"BucketAlreadyOwnedByYou"}, **options)
        except ClientError as exc:
            if code(exc) == "BucketAlreadyExists":
                raise Conflict(f"bucket {name} belongs to another AWS account: bucket names are global") from exc
            raise
        change = ResourceChange.CREATED
    live_tags = call(f"read tags of bucket {name}", c.s3.get_bucket_tagging, ok=NOT_FOUND, Bucket=name)
    live = resources.tag_dict(list(live_tags["TagSet"]) if live_tags else [])
    if live.get(CLUSTER_LABEL, c.id) != c.id:
        raise Conflict(f"bucket {name} is tagged {CLUSTER_LABEL}={live[CLUSTER_LABEL]}, not {c.id}")
    desired = resources.tags(c.spec, Part.CLOUD_CONFIG)
    if resources.missing_tags(live, desired):
        do(
            f"tag bucket {name}",
            c.s3.put_bucket_tagging,
            Bucket=name,
            Tagging={"TagSet": resources.tag_list({**live, **desired})},
        )
        change = worse(change, ResourceChange.UPDATED)
    block = {
        "BlockPublicAcls": True,
        "IgnorePublicAcls": True,
        "BlockPublicPolicy": True,
        "RestrictPublicBuckets": True,
    }
    current = call(f"read public access block of {name}", c.s3.get_public_access_block, ok=NOT_FOUND, Bucket=name)
    if current is None or dict(current["PublicAccessBlockConfiguration"]) != block:
        do(
            f"block public access to {name}",
            c.s3.put_public_access_block,
            Bucket=name,
            PublicAccessBlockConfiguration=block,
        )
        change = worse(change, ResourceChange.UPDATED)
    # SSE-S3: the cloud-configs hold no secrets (key pairs are in Secrets Manager), so no KMS key
    # and no kms:Decrypt grant for the nodes is needed.
    encryption = call(f"read encryption of {name}", c.s3.get_bucket_encryption, ok=NOT_FOUND, Bucket=name)
    rules = encryption["ServerSideEncryptionConfiguration"]["Rules"] if encryption else []
    algorithms = {rule.get("ApplyServerSideEncryptionByDefault", {}).get("SSEAlgorithm") for rule in rules}
    if not algorithms & {"AES256", "aws:kms", "aws:kms:dsse"}:
        do(
            f"encrypt bucket {name}",
            c.s3.put_bucket_encryption,
            Bucket=name,
            ServerSideEncryptionConfiguration={
                "Rules": [{"ApplyServerSideEncryptionByDefault": {"SSEAlgorithm": "AES256"}}]
            },
        )
        change = worse(change, ResourceChange.UPDATED)
    outcomes.append(outcome(Kind.BUCKET, name, change))
    return name


def existing_bucket(c: AwsContext) -> str:
    name = c.bucket
    if not bucket_exists(c, name):
        raise MissingPrerequisite(
            f"bucket {name} is missing: it existed and was removed outside tenantctl, or the AWS endpoint lost "
            "its state (a restarted moto); ensuring the foundation again recreates it"
        )
    return name


def ensure_node_identity(c: AwsContext, role: str, bucket: str, outcomes: list[ResourceOutcome]) -> None:
    """IAM role ``tenantctl-<id>-<role>`` with its inline policy, and its instance profile."""
    name = resources.iam_name(c.id, role)
    desired_tags = resources.tags(c.spec, Part.IAM, name, **{ROLE_LABEL: role})
    trust = resources.trust_policy()
    live = call(f"read IAM role {name}", c.iam.get_role, ok=NOT_FOUND, RoleName=name)
    if live is None:
        created = call(
            f"create IAM role {name}",
            c.iam.create_role,
            ok={"EntityAlreadyExists"},
            RoleName=name,
            Path=resources.IAM_PATH,
            AssumeRolePolicyDocument=trust,
            Description=f"tenantctl: {role} nodes of cluster {c.id}",
            Tags=resources.tag_list(desired_tags),
        )
        role_change = ResourceChange.CREATED if created is not None else ResourceChange.UNCHANGED
    else:
        role_change = ResourceChange.UNCHANGED
        role_tags = resources.tag_dict(list(live["Role"].get("Tags") or []))
        if (why := resources.foreign(role_tags, c.spec)) is not None:
            raise Conflict(f"IAM role {name} exists but is not tenantctl's for cluster {c.id} ({why})")
        if missing := resources.missing_tags(role_tags, desired_tags):
            do(f"tag IAM role {name}", c.iam.tag_role, RoleName=name, Tags=resources.tag_list(missing))
            role_change = ResourceChange.UPDATED
        if _policy(live["Role"].get("AssumeRolePolicyDocument")) != _policy(trust):
            do(
                f"reset the trust policy of {name}",
                c.iam.update_assume_role_policy,
                RoleName=name,
                PolicyDocument=trust,
            )
            role_change = ResourceChange.UPDATED
    document = resources.node_policy(c.spec, role, bucket, c.partition, c.account)
    current = call(
        f"read policy of {name}", c.iam.get_role_policy, ok=NOT_FOUND, RoleName=name, PolicyName=resources.NODE_POLICY
    )
    if current is None or _policy(current.get("PolicyDocument")) != _policy(document):
        do(
            f"write policy of {name}",
            c.iam.put_role_policy,
            RoleName=name,
            PolicyName=resources.NODE_POLICY,
            PolicyDocument=document,
        )
        role_change = worse(role_change, ResourceChange.UPDATED)
    outcomes.append(outcome(Kind.ROLE, name, role_change))

    profile = call(f"read instance profile {name}", c.iam.get_instance_profile, ok=NOT_FOUND, InstanceProfileName=name)
    if profile is None:
        call(
            f"create instance profile {name}",
            c.iam.create_instance_profile,
            ok={"EntityAlreadyExists"},
            InstanceProfileName=name,
            Path=resources.IAM_PATH,
            Tags=resources.tag_list(desired_tags),
        )
        profile_change, roles = ResourceChange.CREATED, []
    else:
        profile_change = ResourceChange.UNCHANGED
        profile_tags = resources.tag_dict(list(profile["InstanceProfile"].get("Tags") or []))
        if (why := resources.foreign(profile_tags, c.spec)) is not None:
            raise Conflict(f"instance profile {name} exists but is not tenantctl's for cluster {c.id} ({why})")
        if missing := resources.missing_tags(profile_tags, desired_tags):
            do(
                f"tag instance profile {name}",
                c.iam.tag_instance_profile,
                InstanceProfileName=name,
                Tags=resources.tag_list(missing),
            )
            profile_change = ResourceChange.UPDATED
        roles = [str(role_["RoleName"]) for role_ in profile["InstanceProfile"].get("Roles") or []]
    for other in roles:
        if other != name:
            do(
                f"remove {other} from {name}",
                c.iam.remove_role_from_instance_profile,
                InstanceProfileName=name,
                RoleName=other,
            )
            profile_change = worse(profile_change, ResourceChange.UPDATED)
    if name not in roles:
        call(
            f"add role {name} to its instance profile",
            c.iam.add_role_to_instance_profile,
            ok={"LimitExceeded"},  # a profile holds one role: it is there already (a race)
            InstanceProfileName=name,
            RoleName=name,
        )
        profile_change = worse(profile_change, ResourceChange.UPDATED)
    outcomes.append(outcome(Kind.INSTANCE_PROFILE, name, profile_change))


def ensure_cloud_config(c: AwsContext, bucket: str, role: str, version: str) -> ResourceOutcome:
    key = resources.cloud_config_key(role, version)
    content = resources.cloud_config(c.spec, role, version, c.secrets_region)
    digest = resources.content_digest(content)
    head = call(f"read s3://{bucket}/{key}", c.s3.head_object, ok=NOT_FOUND, Bucket=bucket, Key=key)
    if head is not None and head.get("Metadata", {}).get("sha256") == digest:
        return outcome(Kind.OBJECT, key, ResourceChange.UNCHANGED)
    do(
        f"write s3://{bucket}/{key}",
        c.s3.put_object,
        Bucket=bucket,
        Key=key,
        Body=content.encode(),
        ContentType="text/cloud-config",
        Metadata={"sha256": digest},
    )
    return outcome(Kind.OBJECT, key, ResourceChange.CREATED if head is None else ResourceChange.UPDATED)


def delete_object(c: AwsContext, bucket: str, key: str) -> ResourceOutcome:
    head = call(f"read s3://{bucket}/{key}", c.s3.head_object, ok=NOT_FOUND, Bucket=bucket, Key=key)
    if head is None:
        return outcome(Kind.OBJECT, key, ResourceChange.ABSENT)
    call(f"delete s3://{bucket}/{key}", c.s3.delete_object, ok=NOT_FOUND, Bucket=bucket, Key=key)
    return outcome(Kind.OBJECT, key, ResourceChange.DELETED)


def delete_node_identity(c: AwsContext, role: str) -> list[ResourceOutcome]:
    """Instance profile (after taking its role out), then the role's policies, then the role."""
    name = resources.iam_name(c.id, role)
    outcomes = []
    profile = call(f"read instance profile {name}", c.iam.get_instance_profile, ok=NOT_FOUND, InstanceProfileName=name)
    if profile is None:
        outcomes.append(outcome(Kind.INSTANCE_PROFILE, name, ResourceChange.ABSENT))
    else:
        if (
            why := resources.foreign(resources.tag_dict(list(profile["InstanceProfile"].get("Tags") or [])), c.spec)
        ) is not None:
            raise Conflict(f"instance profile {name} is not tenantctl's for cluster {c.id} ({why}); not deleting it")
        for role_ in profile["InstanceProfile"].get("Roles") or []:
            call(
                f"remove {role_['RoleName']} from {name}",
                c.iam.remove_role_from_instance_profile,
                ok=NOT_FOUND,
                InstanceProfileName=name,
                RoleName=role_["RoleName"],
            )
        call(f"delete instance profile {name}", c.iam.delete_instance_profile, ok=NOT_FOUND, InstanceProfileName=name)
        outcomes.append(outcome(Kind.INSTANCE_PROFILE, name, ResourceChange.DELETED))
    live = call(f"read IAM role {name}", c.iam.get_role, ok=NOT_FOUND, RoleName=name)
    if live is None:
        outcomes.append(outcome(Kind.ROLE, name, ResourceChange.ABSENT))
        return outcomes
    if (why := resources.foreign(resources.tag_dict(list(live["Role"].get("Tags") or [])), c.spec)) is not None:
        raise Conflict(f"IAM role {name} is not tenantctl's for cluster {c.id} ({why}); not deleting it")
    policies = call(f"list policies of {name}", c.iam.list_role_policies, ok=NOT_FOUND, RoleName=name)
    for policy in policies["PolicyNames"] if policies else []:
        call(
            f"delete policy {policy} of {name}",
            c.iam.delete_role_policy,
            ok=NOT_FOUND,
            RoleName=name,
            PolicyName=policy,
        )
    attached = call(f"list attached policies of {name}", c.iam.list_attached_role_policies, ok=NOT_FOUND, RoleName=name)
    for managed in attached["AttachedPolicies"] if attached else []:
        call(
            f"detach {managed['PolicyArn']} from {name}",
            c.iam.detach_role_policy,
            ok=NOT_FOUND,
            RoleName=name,
            PolicyArn=managed["PolicyArn"],
        )
    c.delete_when_free(
        f"IAM role {name}", lambda: call(f"delete IAM role {name}", c.iam.delete_role, ok=NOT_FOUND, RoleName=name)
    )
    outcomes.append(outcome(Kind.ROLE, name, ResourceChange.DELETED))
    return outcomes


def delete_bucket(c: AwsContext) -> list[ResourceOutcome]:
    name = c.bucket
    if not bucket_exists(c, name):
        return [outcome(Kind.BUCKET, name, ResourceChange.ABSENT)]
    live_tags = call(f"read tags of bucket {name}", c.s3.get_bucket_tagging, ok=NOT_FOUND, Bucket=name)
    cluster = resources.tag_dict(list(live_tags["TagSet"]) if live_tags else []).get(CLUSTER_LABEL, c.id)
    if cluster != c.id:
        raise Conflict(f"bucket {name} is tagged {CLUSTER_LABEL}={cluster}, not {c.id}; not deleting it")
    # The bucket is not versioned, but someone may have turned versioning on: every version goes.
    pages = c.s3.get_paginator("list_object_versions").paginate(Bucket=name)
    for page in do(f"list objects of {name}", lambda: list(pages)):
        keys = [
            {"Key": v["Key"], "VersionId": v["VersionId"]}
            for v in [*page.get("Versions", []), *page.get("DeleteMarkers", [])]
        ]
        if keys:
            do(f"empty bucket {name}", c.s3.delete_objects, Bucket=name, Delete={"Objects": keys, "Quiet": True})
    c.delete_when_free(
        f"bucket {name}", lambda: call(f"delete bucket {name}", c.s3.delete_bucket, ok=NOT_FOUND, Bucket=name)
    )
    return [outcome(Kind.BUCKET, name, ResourceChange.DELETED)]


def _policy(document: Any) -> Any:
    """A policy document as data: IAM returns it URL-encoded text or (boto3) already parsed."""

    if isinstance(document, str):
        try:
            return json.loads(unquote(document))
        except ValueError:
            return document
    return document
