"""The provisioning module against moto: types, AMIs, placement, launch, errors."""

from __future__ import annotations

import copy
import logging
import socket
from typing import Any

import boto3
import pytest

import bot.aws
from bot.config import Settings
from bot.errors import AllocationError, AwsRejected, AwsUnavailable, InvalidRequest
from bot.provisioning import AMI_PARAMETER, MAX_ZONES_TRIED, Provisioner
from tests.aws_faults import (
    count_calls,
    create_x86_64_image,
    fail_operation,
    remove_backoff,
)

REGION = "us-east-1"  # the region of the `settings` fixture
LOOKUP_OPERATIONS = (
    "DescribeInstanceTypes",
    "DescribeInstanceTypeOfferings",
    "GetParameter",
)
# moto 5.2.5 offers trn1.2xlarge in us-east-1c and us-east-1f only, so a
# zone chosen without looking at offerings (us-east-1a) would be wrong.
PARTLY_OFFERED_TYPE = "trn1.2xlarge"
TAGS = {"AllocationId": "alloc-test", "ManagedBy": "ec2-allocator"}

VCPU_LIMIT_MESSAGE = (
    "You have requested more vCPU capacity than your current vCPU limit of 32 "
    "allows for the instance bucket that the specified instance type belongs "
    "to. Please visit http://aws.amazon.com/contact-us/ec2-request to request "
    "an adjustment to this limit."
)


@pytest.fixture(autouse=True)
def fast_moto(monkeypatch: pytest.MonkeyPatch) -> None:
    """Skip moto's AMI catalogue and reuse parsed models, to keep each test short."""
    monkeypatch.setenv("MOTO_EC2_LOAD_DEFAULT_AMIS", "false")


@pytest.fixture
def provisioner(aws: None, settings: Settings) -> Provisioner:
    return Provisioner(settings)


@pytest.fixture
def ec2(aws: None) -> Any:
    """A plain moto EC2 client for checking what the provisioner did."""
    return boto3.session.Session().client("ec2", region_name=REGION)


def offered_zones(ec2: Any, instance_type: str) -> set[str]:
    response = ec2.describe_instance_type_offerings(
        LocationType="availability-zone",
        Filters=[{"Name": "instance-type", "Values": [instance_type]}],
    )
    return {offering["Location"] for offering in response["InstanceTypeOfferings"]}


def ssm_image_id(architecture: str) -> str:
    ssm = boto3.session.Session().client("ssm", region_name=REGION)
    name = AMI_PARAMETER.format(arch=architecture)
    return ssm.get_parameter(Name=name)["Parameter"]["Value"]


def default_subnet(ec2: Any, zone: str) -> str:
    subnets = ec2.describe_subnets(
        Filters=[{"Name": "availability-zone", "Values": [zone]}]
    )["Subnets"]
    return subnets[0]["SubnetId"]


def all_instances(ec2: Any) -> list[dict[str, Any]]:
    reservations = ec2.describe_instances()["Reservations"]
    return [item for reservation in reservations for item in reservation["Instances"]]


def capture_params(client: Any, operation: str) -> list[dict[str, Any]]:
    """Record the parameters of every call of `operation`, as the caller passed them."""
    captured: list[dict[str, Any]] = []

    def record(params: dict[str, Any], **_: Any) -> None:
        captured.append(copy.deepcopy(params))

    client.meta.events.register(f"before-parameter-build.ec2.{operation}", record)
    return captured


def closed_port() -> int:
    """Return a loopback port that nothing listens on."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


# Instance types


def test_instance_type_reports_moto_details(provisioner: Provisioner, ec2: Any) -> None:
    info = provisioner.instance_type("t4g.micro")
    assert info.name == "t4g.micro"
    assert info.vcpus == 2
    assert info.memory_mib == 1024
    assert info.architectures == ("arm64",)
    assert set(info.zones) == offered_zones(ec2, "t4g.micro")


def test_instance_type_rejects_unknown_type(provisioner: Provisioner) -> None:
    with pytest.raises(InvalidRequest) as raised:
        provisioner.instance_type("zz9.huge")
    assert list(raised.value.fields) == ["instance_type"]
    assert "zz9.huge" in raised.value.fields["instance_type"]


def test_instance_types_leaves_out_unknown_names(provisioner: Provisioner) -> None:
    found = provisioner.instance_types(["t3.micro", "zz9.huge", "c5.large"])
    assert sorted(found) == ["c5.large", "t3.micro"]


# AMIs


def test_plan_picks_arm64_ami_for_graviton_type(provisioner: Provisioner) -> None:
    plan = provisioner.plan("t4g.micro")
    assert plan.image is not None
    assert plan.image.architecture == "arm64"
    assert plan.image.image_id == ssm_image_id("arm64")
    assert plan.image.source == AMI_PARAMETER.format(arch="arm64")


def test_plan_picks_x86_64_ami_for_intel_type(provisioner: Provisioner) -> None:
    plan = provisioner.plan("t3.micro")
    assert plan.image is not None
    assert plan.image.architecture == "x86_64"
    assert plan.image.image_id == ssm_image_id("x86_64")


def test_plan_rejects_mismatched_ami(settings: Settings, ec2: Any) -> None:
    image_id = create_x86_64_image(ec2)
    provisioner = Provisioner(settings.model_copy(update={"ami_id": image_id}))
    with pytest.raises(InvalidRequest) as raised:
        provisioner.plan("t4g.micro")
    problem = raised.value.fields["instance_type"]
    assert image_id in problem
    assert "arm64" in problem
    assert "x86_64" in problem


def test_plan_uses_matching_configured_ami(settings: Settings, ec2: Any) -> None:
    image_id = create_x86_64_image(ec2)
    provisioner = Provisioner(settings.model_copy(update={"ami_id": image_id}))
    plan = provisioner.plan("t3.micro")
    assert plan.image is not None
    assert plan.image.image_id == image_id
    assert plan.image.source == "AMI_ID"


def test_plan_caches_type_and_ami_lookups(provisioner: Provisioner) -> None:
    ec2_calls = count_calls(provisioner.ec2, LOOKUP_OPERATIONS)
    ssm_calls = count_calls(provisioner.ssm, LOOKUP_OPERATIONS)
    provisioner.plan("t3.micro")
    assert ec2_calls["DescribeInstanceTypes"] == 1
    assert ssm_calls["GetParameter"] == 1

    ec2_calls.clear()
    ssm_calls.clear()
    provisioner.plan("t3.micro")
    assert sum(ec2_calls.values()) == 0
    assert sum(ssm_calls.values()) == 0


# Placement


def test_plan_chooses_zone_that_offers_type(provisioner: Provisioner, ec2: Any) -> None:
    zones = offered_zones(ec2, PARTLY_OFFERED_TYPE)
    assert "us-east-1a" not in zones  # the premise of this test

    plan = provisioner.plan(PARTLY_OFFERED_TYPE)
    assert plan.availability_zone in zones
    assert plan.subnet_id is None


def test_launch_places_instance_in_offering_zone(
    provisioner: Provisioner, ec2: Any
) -> None:
    plan = provisioner.plan(PARTLY_OFFERED_TYPE)
    [instance] = provisioner.launch(plan, 1, "token-zone", TAGS)
    assert instance.availability_zone in offered_zones(ec2, PARTLY_OFFERED_TYPE)


def test_plan_uses_subnet_in_offering_zone(settings: Settings, ec2: Any) -> None:
    outside = default_subnet(ec2, "us-east-1a")
    inside = default_subnet(ec2, "us-east-1c")
    provisioner = Provisioner(
        settings.model_copy(update={"subnet_ids": (outside, inside)})
    )
    plan = provisioner.plan(PARTLY_OFFERED_TYPE)
    assert plan.subnet_id == inside
    assert plan.availability_zone == "us-east-1c"

    [instance] = provisioner.launch(plan, 1, "token-subnet", TAGS)
    [described] = all_instances(ec2)
    assert described["SubnetId"] == inside
    assert instance.availability_zone == "us-east-1c"


def test_plan_rejects_subnets_outside_offering_zones(
    settings: Settings, ec2: Any
) -> None:
    outside = default_subnet(ec2, "us-east-1a")
    provisioner = Provisioner(settings.model_copy(update={"subnet_ids": (outside,)}))
    with pytest.raises(AllocationError) as raised:
        provisioner.plan(PARTLY_OFFERED_TYPE)
    assert raised.value.code == "Unsupported"
    assert PARTLY_OFFERED_TYPE in raised.value.message


# Launch


def test_launch_sends_count_token_and_tags(
    provisioner: Provisioner,
) -> None:
    plan = provisioner.plan("t3.micro")
    calls = count_calls(provisioner.ec2, ["RunInstances"])
    captured = capture_params(provisioner.ec2, "RunInstances")

    provisioner.launch(plan, 3, "token-launch", TAGS)

    assert calls["RunInstances"] == 1
    [params] = captured
    assert params["MinCount"] == 3
    assert params["MaxCount"] == 3
    assert params["ClientToken"] == "token-launch"
    assert params["InstanceType"] == "t3.micro"
    assert params["ImageId"] == plan.image.image_id
    expected_tags = [{"Key": key, "Value": value} for key, value in TAGS.items()]
    assert params["TagSpecifications"] == [
        {"ResourceType": "instance", "Tags": expected_tags},
        {"ResourceType": "volume", "Tags": expected_tags},
    ]


def test_launch_tags_instances_and_volumes(provisioner: Provisioner, ec2: Any) -> None:
    plan = provisioner.plan("t3.micro")
    launched = provisioner.launch(plan, 2, "token-tags", TAGS)
    ids = [instance.instance_id for instance in launched]
    assert len(ids) == 2

    for item in all_instances(ec2):
        tags = {tag["Key"]: tag["Value"] for tag in item.get("Tags", [])}
        assert tags == TAGS

    volumes = ec2.describe_volumes(
        Filters=[{"Name": "attachment.instance-id", "Values": ids}]
    )["Volumes"]
    assert len(volumes) == 2
    for volume in volumes:
        tags = {tag["Key"]: tag["Value"] for tag in volume.get("Tags", [])}
        assert tags == TAGS


def test_describe_reports_state_reason(provisioner: Provisioner, ec2: Any) -> None:
    plan = provisioner.plan("t3.micro")
    [instance] = provisioner.launch(plan, 1, "token-describe", TAGS)
    ec2.terminate_instances(InstanceIds=[instance.instance_id])

    [described] = provisioner.describe([instance.instance_id])
    assert described.state == "terminated"
    assert described.state_reason


# AWS errors, injected because moto never returns them


def test_launch_tries_each_zone_once_on_capacity_error(
    provisioner: Provisioner, monkeypatch: pytest.MonkeyPatch
) -> None:
    remove_backoff(monkeypatch)
    plan = provisioner.plan("m5.8xlarge")
    fault = fail_operation(
        provisioner.ec2,
        "RunInstances",
        "InsufficientInstanceCapacity",
        "We currently do not have sufficient m5.8xlarge capacity in the "
        "Availability Zone you requested (us-east-1a).",
        status=500,
        times=10,
    )
    with pytest.raises(AwsUnavailable) as raised:
        provisioner.launch(plan, 4, "token-capacity", TAGS)

    zones = [a.params["Placement.AvailabilityZone"][0] for a in fault.attempts]
    tokens = [a.client_token for a in fault.attempts]
    error = raised.value
    assert len(zones) == MAX_ZONES_TRIED
    assert len(set(zones)) == len(zones)
    assert zones[0] == plan.availability_zone
    assert len(set(tokens)) == len(tokens)
    assert tokens[0] == "token-capacity"
    assert error.code == "InsufficientInstanceCapacity"
    assert "4 × m5.8xlarge" in error.message
    assert all(zone in error.message for zone in zones)
    assert error.hint is not None
    assert "instance type" in error.hint
    assert "later" in error.hint


def test_launch_uses_next_zone_with_capacity(
    provisioner: Provisioner, ec2: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    remove_backoff(monkeypatch)
    plan = provisioner.plan("m5.8xlarge")
    fail_operation(
        provisioner.ec2,
        "RunInstances",
        "InsufficientInstanceCapacity",
        "No capacity in the first zone.",
        status=500,
        times=1,
    )

    instances = provisioner.launch(plan, 2, "token-next-zone", TAGS)

    assert len(instances) == 2
    assert {i.availability_zone for i in instances} == {plan.fallbacks[0][1]}


def test_launch_reports_vcpu_limit_with_quota_hint(
    provisioner: Provisioner, ec2: Any
) -> None:
    plan = provisioner.plan("c5.4xlarge")
    fault = fail_operation(
        provisioner.ec2, "RunInstances", "VcpuLimitExceeded", VCPU_LIMIT_MESSAGE
    )
    with pytest.raises(AwsRejected) as raised:
        provisioner.launch(plan, 3, "token-vcpu", TAGS)

    error = raised.value
    assert error.code == "VcpuLimitExceeded"
    assert "3 × c5.4xlarge" in error.message
    assert "limit of 32" in error.message
    assert error.hint is not None
    assert "Service Quotas" in error.hint
    assert len(fault.attempts) == 1
    assert all_instances(ec2) == []


def test_launch_does_not_retry_unsupported(provisioner: Provisioner, ec2: Any) -> None:
    plan = provisioner.plan("t3.micro")
    fault = fail_operation(
        provisioner.ec2,
        "RunInstances",
        "Unsupported",
        "Your requested instance type (t3.micro) is not supported in your "
        "requested Availability Zone (us-east-1a).",
        status=400,
        times=5,
    )
    with pytest.raises(AwsRejected) as raised:
        provisioner.launch(plan, 1, "token-unsupported", TAGS)

    assert raised.value.code == "Unsupported"
    assert raised.value.http_status == 422
    assert len(fault.attempts) == 1
    assert all_instances(ec2) == []


def test_launch_retries_throttling_with_same_token(
    provisioner: Provisioner,
    ec2: Any,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    remove_backoff(monkeypatch)
    caplog.set_level(logging.WARNING, logger="bot.aws")
    plan = provisioner.plan("t3.micro")
    fault = fail_operation(
        provisioner.ec2,
        "RunInstances",
        "RequestLimitExceeded",
        "Request limit exceeded.",
        status=503,
        times=2,
    )

    launched = provisioner.launch(plan, 2, "token-throttled", TAGS)

    assert len(fault.attempts) == 3
    assert fault.client_tokens == ["token-throttled"] * 3
    assert len(launched) == 2
    assert len(all_instances(ec2)) == 2
    retry_lines = [
        record
        for record in caplog.records
        if record.levelno == logging.WARNING
        and "RequestLimitExceeded" in record.getMessage()
        and "retrying" in record.getMessage()
    ]
    assert len(retry_lines) == 2


def test_launch_maps_unauthorized_to_forbidden(provisioner: Provisioner) -> None:
    plan = provisioner.plan("t3.micro")
    fault = fail_operation(
        provisioner.ec2,
        "RunInstances",
        "UnauthorizedOperation",
        "You are not authorized to perform this operation. Encoded "
        "authorization failure message: abc123",
        status=403,
    )
    with pytest.raises(AwsRejected) as raised:
        provisioner.launch(plan, 1, "token-denied", TAGS)

    assert raised.value.http_status == 403
    assert raised.value.code == "UnauthorizedOperation"
    assert "abc123" not in raised.value.message
    assert len(fault.attempts) == 1


def test_launch_retries_internal_error_then_gives_up(
    provisioner: Provisioner, ec2: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    remove_backoff(monkeypatch)
    plan = provisioner.plan("t3.micro")
    fault = fail_operation(
        provisioner.ec2,
        "RunInstances",
        "InternalError",
        "An internal error has occurred",
        status=500,
        times=100,
    )
    with pytest.raises(AwsUnavailable) as raised:
        provisioner.launch(plan, 1, "token-internal", TAGS)

    assert raised.value.code == "InternalError"
    assert raised.value.http_status == 502
    assert len(fault.attempts) == bot.aws.RETRY_ATTEMPTS
    assert all_instances(ec2) == []


def test_lookup_reports_unreachable_endpoint(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    remove_backoff(monkeypatch)
    monkeypatch.setattr(bot.aws, "RETRY_ATTEMPTS", 2)
    endpoint = f"http://127.0.0.1:{closed_port()}"
    provisioner = Provisioner(
        settings.model_copy(update={"aws_endpoint_url": endpoint})
    )
    with pytest.raises(AwsUnavailable) as raised:
        provisioner.instance_type("t3.micro")

    assert raised.value.message == "Could not reach AWS"
    assert raised.value.code == "EndpointConnectionError"
    assert raised.value.http_status == 502
