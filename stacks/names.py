"""Stack names: ``<env>-<region>`` (``production-eu``, ``staging-eu``), so several environments of
the same region can exist side by side; the control plane's audit anchor is ``<env>-control``.

The environment is a short lower-case word (no hyphen, so a stack name splits unambiguously on its
first hyphen even when a region's name has one). It comes from ``--env``, else ``$RESIDENCY_ENV``,
else :data:`DEFAULT_ENV`. Physical names (buckets, queues, the database identifier) keep their
``residency-<region>-...`` form in the default environment and carry the environment elsewhere
(``residency-staging-eu-attachments``): S3 bucket names are global, so two environments could
not otherwise both exist.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass

from residency.catalogue import Catalogue
from residency.errors import InputError

DEFAULT_ENV = "production"
ENV_VAR = "RESIDENCY_ENV"
CONTROL = "control"
_ENV = re.compile(r"^[a-z][a-z0-9]{0,15}$")


def env_name(value: str | None = None) -> str:
    """The environment: ``value``, else ``$RESIDENCY_ENV``, else ``production``; checked."""
    env = value or os.environ.get(ENV_VAR) or DEFAULT_ENV
    if not _ENV.match(env):
        raise InputError(f"environment '{env}': use a lower-case word of letters and digits, at most 16 (e.g. production, staging)")
    return env


def stack_name(env: str, region: str) -> str:
    return f"{env_name(env)}-{region}"


def resource_prefix(env: str) -> str:
    """The prefix of physical names: ``residency`` in the default environment, else ``residency-<env>``."""
    return "residency" if env == DEFAULT_ENV else f"residency-{env}"


@dataclass(frozen=True)
class StackName:
    env: str
    target: str  # a region's name, or "control"

    @property
    def is_control(self) -> bool:
        return self.target == CONTROL

    def __str__(self) -> str:
        return f"{self.env}-{self.target}"


def parse(stack: str, cat: Catalogue) -> StackName:
    """``production-eu`` -> (production, eu); refuses a name that is not ``<env>-<region>`` or
    ``<env>-control``, naming the form it wants."""
    env, sep, target = stack.partition("-")
    if not sep or not _ENV.match(env) or not target:
        hint = f"; rename it: pulumi stack rename {DEFAULT_ENV}-{stack} -s {stack}" if stack in cat.regions or stack == CONTROL else ""
        raise InputError(f"stack '{stack}': stack names are <env>-<region> (e.g. {DEFAULT_ENV}-{next(iter(cat.regions), 'eu')}){hint}")
    if target != CONTROL or target in cat.regions:
        cat.region(target)  # an unknown region fails with a hint
    return StackName(env, target)
