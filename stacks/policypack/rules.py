"""The policy pack's validations: adapters from pulumi-policy's arguments to
:func:`residency.policy.check_resource` / :func:`residency.policy.check_resources`.

Kept apart from ``__main__.py`` (which constructs the :class:`pulumi_policy.PolicyPack` and so
needs the engine) so tests can call them with hand-made arguments. The region a resource belongs
to comes from the stack's name, ``<env>-<region>``, read from the resource's URN
(``urn:pulumi:<stack>::<project>::...``); an ``<env>-control`` stack has no region to check.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Callable

from residency import catalogue, policy

NAME = "residency-guardrails"
UNKNOWN = "<unknown during preview>"


def load_catalogue() -> catalogue.Catalogue:
    from residency.stacks.program import regions_path  # lazily: the program imports pulumi

    return catalogue.load(regions_path())


def stack_of(urn: str) -> str:
    """The stack's name (``<env>-<region>``) in a resource URN."""
    head = urn.split("::", 1)[0]  # urn:pulumi:<stack>
    return head.split(":")[-1]


def _region(urn: str, cat: catalogue.Catalogue, report_violation: ReportViolation) -> str | None:
    """The region the stack of ``urn`` builds; None (nothing to check) for a ``<env>-control``
    stack, or after reporting a stack name that is not ``<env>-<region>``."""
    from residency.errors import InputError
    from residency.stacks.names import parse

    try:
        name = parse(stack_of(urn), cat)
    except InputError as exc:
        report_violation(f"{exc} (regions: {cat.path})")
        return None
    return None if name.is_control else name.target


def plain(value: Any) -> Any:
    """A resource's properties as plain dicts and lists. pulumi-policy hands them over as read-only
    ``Mapping`` and ``Sequence`` views (``ResourceValidationArgs.props``) that raise its
    ``UnknownValueError`` when a value unknown during preview is read; such a value becomes
    :data:`UNKNOWN` here instead of aborting the whole check."""
    if isinstance(value, Mapping):
        return {k: _read(value, k) for k in value}
    if isinstance(value, Sequence) and not isinstance(value, (str, bytes)):
        return [_read(value, i) for i in range(len(value))]
    return value


def _read(container: Any, key: Any) -> Any:
    from pulumi_policy.proxy import UnknownValueError  # lazily: only the engine's policy run needs it

    try:
        return plain(container[key])
    except UnknownValueError:
        return UNKNOWN


def _provider_region(provider: Any) -> str | None:
    if provider is None:
        return None
    props = plain(getattr(provider, "props", None) or {})
    r = props.get("region")
    return r if isinstance(r, str) and r != UNKNOWN else None


ReportViolation = Callable[..., None]


def validate_resource(args: Any, report_violation: ReportViolation, cat: catalogue.Catalogue | None = None) -> None:
    """Every residency rule that one resource can be checked against on its own."""
    cat = cat or load_catalogue()
    region = _region(args.urn, cat, report_violation)
    if region is None:
        return
    for d in policy.check_resource(cat, region, args.resource_type, plain(args.props), _provider_region(args.provider)):
        report_violation(d.reason)


def validate_stack(args: Any, report_violation: ReportViolation, cat: catalogue.Catalogue | None = None) -> None:
    """The rules that need the whole stack: replication destinations declared and inside the
    jurisdiction, every bucket encrypted with SSE-KMS."""
    cat = cat or load_catalogue()
    if not args.resources:
        return
    region = _region(args.resources[0].urn, cat, report_violation)
    if region is None:
        return
    items = [(r.resource_type, plain(r.props), _provider_region(r.provider)) for r in args.resources]
    single = {d.reason for t, p, a in items for d in policy.check_resource(cat, region, t, p, a)}
    for d in policy.check_resources(cat, region, items):
        if d.reason not in single:  # already reported by the resource policy
            report_violation(d.reason)


def policies() -> list[Any]:
    """The pack's two policies (what ``__main__.py`` serves to the engine)."""
    from pulumi_policy import ResourceValidationPolicy, StackValidationPolicy

    return [
        ResourceValidationPolicy(
            name="residency-resource",
            description="No resource outside the region's allowed AWS regions, no replication outside the "
            "jurisdiction, no multi-region KMS keys, no unencrypted storage.",
            validate=validate_resource,
        ),
        StackValidationPolicy(
            name="residency-stack",
            description="Replication only to buckets the stack declares, inside the jurisdiction; every bucket SSE-KMS.",
            validate=validate_stack,
        ),
    ]
