"""EC2 provisioning: resolve instance types and AMIs, launch and describe.

Nothing here depends on Slack. Lookups of instance types, offerings and AMIs
are cached for the life of the process, so an allocation whose type was seen
before costs one RunInstances and the describes that follow it.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterable, Sequence
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError

from bot.aws import make_client
from bot.config import Settings
from bot.errors import AllocationError, AwsRejected, AwsUnavailable, InvalidRequest
from bot.models import Image, Instance, InstanceTypeInfo, LaunchPlan
from bot.provisioning_errors import translate_client_error, unreachable

logger = logging.getLogger(__name__)

# Availability Zones tried for one launch when EC2 reports no capacity.
MAX_ZONES_TRIED = 3

AMI_PARAMETER = "/aws/service/ami-amazon-linux-latest/al2023-ami-kernel-default-{arch}"
# Architectures the default AMI exists for, in order of preference.
DEFAULT_AMI_ARCHITECTURES = ("x86_64", "arm64")


class Provisioner:
    """Launches and inspects EC2 instances for allocations."""

    def __init__(self, settings: Settings, ec2: Any = None, ssm: Any = None):
        self.settings = settings
        self.region = settings.aws_region
        self._ec2 = ec2
        self._ssm = ssm
        self._lock = threading.Lock()  # guards the lookup caches
        # Creating a client takes a while; the caches must stay readable meanwhile.
        self._client_lock = threading.Lock()
        self._types: dict[str, InstanceTypeInfo] = {}
        self._images: dict[str, Image] = {}  # keyed by architecture or AMI ID
        self._subnet_zones: dict[str, str] | None = None

    @property
    def ec2(self) -> Any:
        if self._ec2 is None:
            with self._client_lock:
                if self._ec2 is None:
                    self._ec2 = make_client("ec2", self.settings)
        return self._ec2

    @property
    def ssm(self) -> Any:
        if self._ssm is None:
            with self._client_lock:
                if self._ssm is None:
                    self._ssm = make_client("ssm", self.settings)
        return self._ssm

    # Instance types

    def cached_instance_types(self) -> dict[str, InstanceTypeInfo]:
        """Return the instance types looked up so far, without calling AWS."""
        with self._lock:
            return dict(self._types)

    def instance_types(self, names: Sequence[str]) -> dict[str, InstanceTypeInfo]:
        """Look up several instance types at once; unknown names are left out."""
        missing = [name for name in names if name not in self._types]
        if missing:
            found = self._describe_types(missing)
            zones = self._offered_zones([info.name for info in found])
            with self._lock:
                for info in found:
                    offered = tuple(sorted(zones.get(info.name, ())))
                    self._types[info.name] = info.model_copy(update={"zones": offered})
        with self._lock:
            return {name: self._types[name] for name in names if name in self._types}

    def instance_type(self, name: str) -> InstanceTypeInfo:
        """Return one instance type, or raise if it does not exist or is not offered."""
        info = self.instance_types([name]).get(name)
        if info is None:
            problem = f"{name} is not an EC2 instance type in {self.region}"
            raise InvalidRequest({"instance_type": problem})
        if not info.zones:
            raise AwsRejected(
                "Unsupported",
                f"{name} is not offered in any Availability Zone of {self.region}",
                hint="Choose another instance type",
            )
        return info

    def _describe_types(self, names: list[str]) -> list[InstanceTypeInfo]:
        try:
            response = self._call("DescribeInstanceTypes", InstanceTypes=names)
        except InvalidRequest:
            # EC2 rejects the whole call when one name is unknown; ask one by one.
            if len(names) == 1:
                return []
            return [info for name in names for info in self._describe_types([name])]
        return [_type_info(item) for item in response.get("InstanceTypes", [])]

    def _offered_zones(self, names: list[str]) -> dict[str, set[str]]:
        zones: dict[str, set[str]] = {name: set() for name in names}
        if not names:
            return zones
        paginator = self.ec2.get_paginator("describe_instance_type_offerings")
        pages = paginator.paginate(
            LocationType="availability-zone",
            Filters=[{"Name": "instance-type", "Values": names}],
        )
        try:
            for page in pages:
                for offering in page.get("InstanceTypeOfferings", []):
                    zones[offering["InstanceType"]].add(offering["Location"])
        except ClientError as error:
            raise translate_client_error(error) from error
        except BotoCoreError as error:
            raise unreachable(error) from error
        return zones

    # AMIs and placement

    def plan(self, instance_type: str) -> LaunchPlan:
        """Resolve the type, an AMI of a matching architecture and a zone."""
        info = self.instance_type(instance_type)
        image = self._image_for(info)
        placements = self._placements(info)
        subnet_id, zone = placements[0]
        return LaunchPlan(
            instance_type=info,
            image=image,
            availability_zone=zone,
            subnet_id=subnet_id,
            fallbacks=tuple(placements[1:MAX_ZONES_TRIED]),
        )

    def _image_for(self, info: InstanceTypeInfo) -> Image | None:
        if self.settings.ami_id:
            image = self._configured_image(self.settings.ami_id, "AMI_ID")
        elif self.settings.launch_template:
            image = self._launch_template_image()
            if image is None:
                return None
        else:
            image = self._default_image(info)
        if image.architecture not in info.architectures:
            runs = ", ".join(info.architectures)
            problem = (
                f"{info.name} runs {runs} but the AMI {image.image_id} "
                f"({image.source}) is {image.architecture}"
            )
            raise InvalidRequest(
                {"instance_type": problem},
                hint="Choose an instance type of that architecture, or ask the "
                "operator to configure a matching AMI",
            )
        return image

    def _default_image(self, info: InstanceTypeInfo) -> Image:
        for arch in DEFAULT_AMI_ARCHITECTURES:
            if arch in info.architectures:
                return self._ssm_image(arch)
        raise InvalidRequest(
            {
                "instance_type": f"{info.name} runs {', '.join(info.architectures)}, "
                "for which there is no default Amazon Linux 2023 AMI"
            },
            hint="Ask the operator to set AMI_ID or LAUNCH_TEMPLATE",
        )

    def _ssm_image(self, arch: str) -> Image:
        with self._lock:
            cached = self._images.get(arch)
        if cached is not None:
            return cached
        name = AMI_PARAMETER.format(arch=arch)
        try:
            value = self.ssm.get_parameter(Name=name)["Parameter"]["Value"]
        except ClientError as error:
            raise translate_client_error(error) from error
        except BotoCoreError as error:
            raise unreachable(error) from error
        image = Image(image_id=value, architecture=arch, source=name)
        with self._lock:
            self._images[arch] = image
        return image

    def _configured_image(self, image_id: str, source: str) -> Image:
        with self._lock:
            cached = self._images.get(image_id)
        if cached is not None:
            return cached
        images = self._call("DescribeImages", ImageIds=[image_id]).get("Images", [])
        if not images:
            raise AwsRejected(
                "InvalidAMIID.NotFound",
                f"The configured AMI {image_id} was not found in {self.region}",
                hint="Ask the operator to check AMI_ID or the launch template",
            )
        image = Image(
            image_id=image_id, architecture=images[0]["Architecture"], source=source
        )
        with self._lock:
            self._images[image_id] = image
        return image

    def _launch_template_image(self) -> Image | None:
        response = self._call(
            "DescribeLaunchTemplateVersions",
            Versions=["$Default"],
            **_template_ref(self.settings.launch_template or ""),
        )
        versions = response.get("LaunchTemplateVersions", [])
        image_id = (
            versions[0].get("LaunchTemplateData", {}).get("ImageId")
            if versions
            else None
        )
        if not image_id:
            return None
        return self._configured_image(image_id, "launch template")

    def _placements(self, info: InstanceTypeInfo) -> list[tuple[str | None, str]]:
        """Return (subnet, zone) pairs that offer the type, the preferred first.

        Without SUBNET_IDS the subnet is None and the default VPC's subnet of
        the zone is used.
        """
        if not self.settings.subnet_ids:
            return [(None, zone) for zone in info.zones]
        placements: list[tuple[str | None, str]] = [
            (subnet_id, zone)
            for subnet_id, zone in self._subnets().items()
            if zone in info.zones
        ]
        if not placements:
            raise AwsRejected(
                "Unsupported",
                f"None of the configured subnets is in a zone that offers "
                f"{info.name} ({', '.join(info.zones)})",
                hint="Choose another instance type, or ask the operator to add a "
                "subnet in one of those zones",
            )
        return placements

    def _subnets(self) -> dict[str, str]:
        if self._subnet_zones is None:
            subnets = self._call(
                "DescribeSubnets", SubnetIds=list(self.settings.subnet_ids)
            )
            self._subnet_zones = {
                subnet["SubnetId"]: subnet["AvailabilityZone"]
                for subnet in subnets.get("Subnets", [])
            }
        return self._subnet_zones

    # Launch and inspect

    def launch(
        self, plan: LaunchPlan, quantity: int, client_token: str, tags: dict[str, str]
    ) -> list[Instance]:
        """Launch exactly `quantity` instances in one RunInstances call.

        MinCount equals MaxCount, so EC2 launches all of them or none. The tags
        travel in TagSpecifications of the same call, for instances and volumes,
        so accounts that require tags on create accept the launch.
        """
        tag_list = [{"Key": key, "Value": value} for key, value in tags.items()]
        params: dict[str, Any] = {
            "InstanceType": plan.instance_type.name,
            "MinCount": quantity,
            "MaxCount": quantity,
            "ClientToken": client_token,
            "TagSpecifications": [
                {"ResourceType": "instance", "Tags": tag_list},
                {"ResourceType": "volume", "Tags": tag_list},
            ],
        }
        if plan.image is not None:
            params["ImageId"] = plan.image.image_id
        if self.settings.launch_template:
            params["LaunchTemplate"] = {
                **_template_ref(self.settings.launch_template),
                "Version": "$Default",
            }
        else:
            params["MetadataOptions"] = {
                "HttpTokens": "required",
                "HttpEndpoint": "enabled",
            }
        if self.settings.security_group_ids:
            params["SecurityGroupIds"] = list(self.settings.security_group_ids)
        if self.settings.key_name:
            params["KeyName"] = self.settings.key_name
        placements = [(plan.subnet_id, plan.availability_zone), *plan.fallbacks]
        tried: list[str] = []
        for attempt, (subnet_id, zone) in enumerate(placements):
            # Another placement is another request, so it needs its own token:
            # EC2 rejects a token reused with different parameters.
            token = client_token if attempt == 0 else f"{client_token}-{zone}"[:64]
            try:
                return self._run(params, subnet_id, zone, token, quantity, plan)
            except AwsUnavailable as error:
                if error.code != "InsufficientInstanceCapacity":
                    raise
                tried.append(zone or "?")
                if attempt + 1 < len(placements):
                    logger.warning(
                        "No capacity for %d x %s in %s; trying %s",
                        quantity,
                        plan.instance_type.name,
                        zone,
                        placements[attempt + 1][1],
                    )
                    continue
                error.message = (
                    f"AWS has no capacity for {quantity} × {plan.instance_type.name} "
                    f"in {', '.join(tried)} right now"
                )
                error.hint = "Try another instance type, fewer instances, or later"
                raise
        raise AssertionError("a plan has at least one placement")  # pragma: no cover

    def _run(
        self,
        params: dict[str, Any],
        subnet_id: str | None,
        zone: str | None,
        token: str,
        quantity: int,
        plan: LaunchPlan,
    ) -> list[Instance]:
        placed = {**params, "ClientToken": token}
        if subnet_id:
            placed["SubnetId"] = subnet_id
        elif zone:
            placed["Placement"] = {"AvailabilityZone": zone}
        context = {
            "instance_type": plan.instance_type.name,
            "quantity": quantity,
            "zone": zone,
        }
        response = self._call("RunInstances", context=context, **placed)
        return [_instance(item) for item in response.get("Instances", [])]

    def describe(self, instance_ids: Iterable[str]) -> list[Instance]:
        """Describe instances; IDs EC2 does not know yet come back as `pending`."""
        ids = list(instance_ids)
        if not ids:
            return []
        try:
            response = self._call("DescribeInstances", InstanceIds=ids)
        except AllocationError as error:
            # Right after a launch EC2 may not list the new IDs yet.
            if error.code != "InvalidInstanceID.NotFound":
                raise
            return [Instance(instance_id=i, state="pending") for i in ids]
        found = {
            item["InstanceId"]: _instance(item)
            for reservation in response.get("Reservations", [])
            for item in reservation.get("Instances", [])
        }
        return [found.get(i, Instance(instance_id=i, state="pending")) for i in ids]

    def find_instances(self, allocation_id: str) -> list[Instance]:
        """Return the instances tagged with the allocation ID, terminated ones aside."""
        response = self._call(
            "DescribeInstances",
            Filters=[
                {"Name": "tag:AllocationId", "Values": [allocation_id]},
                {
                    "Name": "instance-state-name",
                    "Values": ["pending", "running", "stopping", "stopped"],
                },
            ],
        )
        return [
            _instance(item)
            for reservation in response.get("Reservations", [])
            for item in reservation.get("Instances", [])
        ]

    def warm(self, names: Sequence[str]) -> None:
        """Load the given instance types and the default AMIs into the cache."""
        self.instance_types(names)
        if not (self.settings.ami_id or self.settings.launch_template):
            known = self.cached_instance_types().values()
            architectures = {a for info in known for a in info.architectures}
            for arch in DEFAULT_AMI_ARCHITECTURES:
                if arch in architectures:
                    self._ssm_image(arch)

    def _call(
        self, operation: str, context: dict[str, Any] | None = None, **params: Any
    ) -> Any:
        method = getattr(self.ec2, _snake_case(operation))
        try:
            return method(**params)
        except ClientError as error:
            raise translate_client_error(error, context or {}) from error
        except BotoCoreError as error:
            raise unreachable(error) from error


def _snake_case(operation: str) -> str:
    return "".join("_" + c.lower() if c.isupper() else c for c in operation).lstrip("_")


def _template_ref(template: str) -> dict[str, str]:
    if template.startswith("lt-"):
        return {"LaunchTemplateId": template}
    return {"LaunchTemplateName": template}


def _type_info(item: dict[str, Any]) -> InstanceTypeInfo:
    return InstanceTypeInfo(
        name=item["InstanceType"],
        vcpus=item.get("VCpuInfo", {}).get("DefaultVCpus", 0),
        memory_mib=item.get("MemoryInfo", {}).get("SizeInMiB", 0),
        architectures=tuple(
            item.get("ProcessorInfo", {}).get("SupportedArchitectures", ())
        ),
    )


def _instance(item: dict[str, Any]) -> Instance:
    reason = item.get("StateReason", {}).get("Message")
    return Instance(
        instance_id=item["InstanceId"],
        state=item.get("State", {}).get("Name", "pending"),
        availability_zone=item.get("Placement", {}).get("AvailabilityZone"),
        private_ip=item.get("PrivateIpAddress") or None,
        public_ip=item.get("PublicIpAddress") or None,
        public_dns=item.get("PublicDnsName") or None,
        state_reason=reason or None,
    )
