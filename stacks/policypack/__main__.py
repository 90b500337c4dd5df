"""The residency policy pack (pulumi-policy). Run by the engine: `--policy-pack stacks/policypack`."""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))

from pulumi_policy import (  # noqa: E402
    EnforcementLevel,
    PolicyPack,
    ResourceValidationPolicy,
    StackValidationPolicy,
)

from residency.stacks.policypack import rules  # noqa: E402

PolicyPack(
    name=rules.NAME,
    enforcement_level=EnforcementLevel.MANDATORY,
    policies=[
        ResourceValidationPolicy(
            name="residency-resource",
            description="No resource outside the region's allowed AWS regions, no replication outside the "
            "jurisdiction, no multi-region KMS keys, no unencrypted storage.",
            validate=rules.validate_resource,
        ),
        StackValidationPolicy(
            name="residency-stack",
            description="Replication only to buckets the stack declares, inside the jurisdiction; every bucket SSE-KMS.",
            validate=rules.validate_stack,
        ),
    ],
)
