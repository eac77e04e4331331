"""AWS API calls per allocation of 1, 5 and 20 instances, against moto in process.

Each count runs twice in one process: the first allocation of a type pays for
the instance type, offering and AMI lookups, the second finds them cached.
The describes that follow the instances to `running` are counted separately,
because their number depends on how long the instances take to start (moto
reports `running` at the first describe).

Run: python -m benchmarks.ec2_calls
"""

from __future__ import annotations

import os
from collections import Counter
from typing import Any

from moto import mock_aws

from bot.allocations import AllocationService
from bot.config import Settings
from bot.models import AllocationRequest, Requester

COUNTS = (1, 5, 20)
INSTANCE_TYPES = ("m5.large", "m5.xlarge", "m5.2xlarge")
# Operation name and its column heading.
COLUMNS = {
    "RunInstances": "RunInstances",
    "DescribeInstanceTypes": "Types",
    "DescribeInstanceTypeOfferings": "Offerings",
    "GetParameter": "SSM AMI",
    "DescribeInstances": "Describe",
}


def count_calls(client: Any, counter: Counter[str]) -> None:
    def record(model: Any, **_: Any) -> None:
        counter[model.name] += 1

    client.meta.events.register("before-call.*.*", record)


def main() -> None:
    os.environ.setdefault("AWS_ACCESS_KEY_ID", "benchmark")
    os.environ.setdefault("AWS_SECRET_ACCESS_KEY", "benchmark")
    headings = " ".join(f"{heading:>12}" for heading in COLUMNS.values())
    print(f"{'instances':>9} {'lookups':<7} {headings}")
    with mock_aws():
        settings = Settings(
            aws_region="us-east-1", max_instances=max(COUNTS), status_poll_seconds=0.01
        )
        service = AllocationService(settings)
        service.ledger.ensure_table()
        counter: Counter[str] = Counter()
        count_calls(service.provisioner.ec2, counter)
        count_calls(service.provisioner.ssm, counter)
        requester = Requester(source="api", name="benchmark")
        for quantity in COUNTS:
            # A new type per count, so that each "cold" row pays its lookups.
            instance_type = INSTANCE_TYPES[COUNTS.index(quantity)]
            for lookups in ("cold", "cached"):
                counter.clear()
                request = AllocationRequest(
                    instance_type=instance_type, quantity=quantity, requester=requester
                )
                allocation, _ = service.allocate(request)
                assert len(allocation.instances) == quantity
                row = " ".join(f"{counter[name]:>12}" for name in COLUMNS)
                print(f"{quantity:>9} {lookups:<7} {row}")
    print("target: one RunInstances per allocation; no lookups when cached")


if __name__ == "__main__":
    main()
