"""The residency policy pack (pulumi-policy), run by the engine: ``--policy-pack stacks/policypack``.
Its virtualenv (``../../.venv``, PulumiPolicy.yaml) has ``residency`` installed; the policies are
:func:`residency.stacks.policypack.rules.policies`."""

from pulumi_policy import EnforcementLevel, PolicyPack

from residency.stacks.policypack import rules

PolicyPack(name=rules.NAME, enforcement_level=EnforcementLevel.MANDATORY, policies=rules.policies())
