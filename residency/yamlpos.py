"""YAML with positions: parse a document into nodes that remember file, line and column.

PyYAML's composer keeps a mark on every node; this module turns that node tree into small
typed wrappers so validation can point at the exact key or value that is wrong, and so
duplicate keys (which plain ``yaml.safe_load`` silently merges) are reported.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Union

import yaml

try:  # the C loader is ~10x faster on large files; fall back where libyaml is absent
    from yaml import CSafeLoader as _Loader
except ImportError:  # pragma: no cover
    from yaml import SafeLoader as _Loader  # type: ignore[assignment]


@dataclass(frozen=True)
class Mark:
    """A 1-based position in a file."""

    file: str
    line: int
    column: int

    def __str__(self) -> str:
        return f"{self.file}:{self.line}:{self.column}"


@dataclass(frozen=True)
class Scalar:
    value: Any
    mark: Mark


@dataclass(frozen=True)
class Seq:
    items: list["YNode"]
    mark: Mark


@dataclass(frozen=True)
class Map:
    """A mapping whose keys are strings. ``keys`` holds each key's own mark;
    ``duplicates`` lists (key, mark) of keys seen more than once."""

    items: dict[str, "YNode"]
    keys: dict[str, Mark]
    mark: Mark
    duplicates: list[tuple[str, Mark]] = field(default_factory=list)
    bad_keys: list[tuple[Any, Mark]] = field(default_factory=list)


YNode = Union[Scalar, Seq, Map]


class YamlSyntaxError(Exception):
    def __init__(self, mark: Mark, message: str):
        self.mark = mark
        self.message = message
        super().__init__(f"{mark}: {message}")


def _mark(file: str, m: yaml.Mark | None) -> Mark:
    if m is None:
        return Mark(file, 1, 1)
    return Mark(file, m.line + 1, m.column + 1)


def parse(text: str, file: str) -> YNode | None:
    """Parse one YAML document; ``None`` for an empty document."""
    loader = _Loader(text)
    try:
        node = loader.get_single_node()
        if node is None:
            return None
        return _convert(loader, node, file)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        problem = exc.problem or "invalid YAML"
        if exc.context and exc.context not in problem:
            problem = f"{exc.context}: {problem}"
        raise YamlSyntaxError(_mark(file, mark), f"YAML syntax error: {problem}") from None
    except yaml.YAMLError as exc:
        raise YamlSyntaxError(Mark(file, 1, 1), f"YAML syntax error: {exc}") from None
    finally:
        loader.dispose()


def _convert(loader: Any, node: yaml.Node, file: str) -> YNode:
    mark = _mark(file, node.start_mark)
    if isinstance(node, yaml.MappingNode):
        items: dict[str, YNode] = {}
        keys: dict[str, Mark] = {}
        dups: list[tuple[str, Mark]] = []
        bad: list[tuple[Any, Mark]] = []
        for knode, vnode in node.value:
            kmark = _mark(file, knode.start_mark)
            key = loader.construct_object(knode, deep=True) if isinstance(knode, yaml.ScalarNode) else None
            if not isinstance(key, str):
                bad.append((key, kmark))
                continue
            if key in items:
                dups.append((key, kmark))
                continue
            items[key] = _convert(loader, vnode, file)
            keys[key] = kmark
        return Map(items, keys, mark, dups, bad)
    if isinstance(node, yaml.SequenceNode):
        return Seq([_convert(loader, n, file) for n in node.value], mark)
    return Scalar(loader.construct_object(node, deep=True), mark)


def plain(node: YNode | None) -> Any:
    """The node's value as plain Python data (marks dropped)."""
    if node is None:
        return None
    if isinstance(node, Map):
        return {k: plain(v) for k, v in node.items.items()}
    if isinstance(node, Seq):
        return [plain(i) for i in node.items]
    return node.value
