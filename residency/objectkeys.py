"""Object layouts: which object keys are one workspace's, from ``workspace.object_prefix``.

The layout is a key prefix with ``{workspace_id}`` somewhere in it, e.g. ``workspaces/{workspace_id}/``
or ``{date}/teams/{workspace_id}/``; any other ``{name}`` stands for one path segment (``{date}``,
``{any}``: one or more characters other than ``/``). A workspace's objects are listed by the
literal prefix before the first other placeholder and filtered by a compiled pattern, so copy,
verify and cleanup all see exactly the same keys. No I/O here.
"""

from __future__ import annotations

import re
from typing import Callable

_PLACEHOLDER = re.compile(r"\{([^{}]*)\}")
_NAME = re.compile(r"^[a-z_][a-z0-9_]*$")
ID = "workspace_id"


def layout_problem(v: str) -> str | None:
    """Why ``v`` is not a valid object layout, or None."""
    names = _PLACEHOLDER.findall(v)
    if ID not in names:
        return f"object_prefix '{v}' must contain {{workspace_id}}, such as 'workspaces/{{workspace_id}}/'"
    if names.count(ID) > 1:
        return f"object_prefix '{v}' must contain {{workspace_id}} once, such as '{{date}}/teams/{{workspace_id}}/'"
    bad = [n for n in names if not _NAME.match(n)]
    if bad or "{" in _PLACEHOLDER.sub("", v) or "}" in _PLACEHOLDER.sub("", v):
        return (f"object_prefix '{v}': placeholders are {{workspace_id}} and one-segment names such as {{date}} or {{any}}"
                + (f", not {{{bad[0]}}}" if bad else "; a brace outside one"))
    if re.search(r"\}\{", v):
        return f"object_prefix '{v}': two placeholders must be separated by literal text, such as '/'"
    if not v.endswith("/"):
        return f"object_prefix '{v}' must end with '/', so one workspace's prefix is never the start of another's"
    return None


class ObjectPrefix(str):
    """One workspace's object layout. As a string it is the layout with the id filled in (for
    a plain layout, exactly the key prefix); ``literal`` is what to list by, ``matches(key)`` says
    whether a listed key is the workspace's."""

    literal: str
    pattern: re.Pattern[str] | None

    def __new__(cls, layout: str, workspace_id: object) -> "ObjectPrefix":
        ws = str(workspace_id)
        text = layout.replace("{" + ID + "}", ws)
        self = super().__new__(cls, text)
        parts: list[str] = []
        literal: str | None = None
        pos = 0
        for m in _PLACEHOLDER.finditer(layout):
            parts.append(re.escape(layout[pos:m.start()]))
            if m.group(1) == ID:
                parts.append(re.escape(ws))
            else:
                if literal is None:
                    literal = layout[:m.start()].replace("{" + ID + "}", ws)
                parts.append(r"[^/]+")
            pos = m.end()
        parts.append(re.escape(layout[pos:]))
        self.literal = text if literal is None else literal
        self.pattern = None if literal is None else re.compile("".join(parts))
        return self

    @property
    def plain(self) -> bool:
        """A plain prefix: listing by it is exact, no filtering needed."""
        return self.pattern is None

    def matches(self, key: str) -> bool:
        return key.startswith(self.literal) and (self.pattern is None or self.pattern.match(key) is not None)


def prefix_of(layout: object) -> tuple[str, Callable[[str], bool] | None]:
    """(what to list by, a key filter or None) for an :class:`ObjectPrefix` or a plain string."""
    if isinstance(layout, ObjectPrefix):
        return layout.literal, None if layout.plain else layout.matches
    return str(layout), None
