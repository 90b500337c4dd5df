"""YAML with positions: parse a document into nodes that remember file, line and column.

PyYAML's composer keeps a mark on every node; this module turns that node tree into small
typed wrappers so validation can point at the exact key or value that is wrong, and so
duplicate keys (which plain ``yaml.safe_load`` silently merges) are reported.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any, Union

import yaml

from yaml.composer import Composer
from yaml.constructor import SafeConstructor
from yaml.resolver import Resolver

from yaml.parser import Parser
from yaml.reader import Reader
from yaml.scanner import Scanner

try:  # libyaml's scanner and parser are ~10x faster on large files; fall back where absent
    from yaml._yaml import CParser
except ImportError:  # pragma: no cover
    CParser = None

MAX_DEPTH = 32
"""Deepest nesting accepted. regions.yaml needs about six levels; the limit keeps a hostile
file (``[[[[...``) from exhausting the stack."""

MAX_NODES = 100_000
"""Most nodes accepted after aliases are expanded, so a few lines of nested aliases
("billion laughs") cannot take the process down."""

MERGE_TAG = "tag:yaml.org,2002:merge"


class _DepthGuard(Composer):
    """PyYAML's (Python) composer with a depth limit.

    ``CSafeLoader`` composes nodes by C recursion with no depth limit, so a deeply nested file
    crashes the interpreter (a segfault, not an exception). Composing in Python lets us bound
    the depth and turn it into an ordinary error.
    """

    def __init__(self) -> None:
        Composer.__init__(self)
        SafeConstructor.__init__(self)  # type: ignore[arg-type]
        Resolver.__init__(self)  # type: ignore[arg-type]
        self._depth = 0

    def compose_node(self, parent: Any, index: Any) -> Any:
        self._depth += 1
        try:
            if self._depth > MAX_DEPTH:
                event = self.peek_event()
                raise yaml.composer.ComposerError(
                    None, None, f"nested more than {MAX_DEPTH} levels deep; a regions file needs far fewer", event.start_mark
                )
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1


class _PyLoader(_DepthGuard, Reader, Scanner, Parser, SafeConstructor, Resolver):  # type: ignore[misc]
    """PyYAML's pure-Python scanner and parser: no nesting limit of their own (they keep
    explicit stacks, not recursion), so :class:`_DepthGuard` is the one that speaks."""

    def __init__(self, stream: str):
        Reader.__init__(self, stream)
        Scanner.__init__(self)
        Parser.__init__(self)
        _DepthGuard.__init__(self)


if CParser is not None:

    class _CLoader(_DepthGuard, CParser, SafeConstructor, Resolver):  # type: ignore[misc]
        """libyaml's scanner and parser. libyaml's scanner reads up to 1024 characters ahead
        and has a flow-nesting limit of its own (1000 in PyYAML 6.0.4's bundled copy, with its
        own wording), so it is used only for text whose flow nesting cannot reach that far:
        see :func:`_flow_depth_bound`."""

        def __init__(self, stream: str):
            CParser.__init__(self, stream)
            _DepthGuard.__init__(self)


_SPECIAL = re.compile(r"""[\[\]{}#'"]""")


def _flow_depth_bound(text: str) -> int:
    """A cheap estimate, erring high, of the deepest ``[``/``{`` nesting in ``text``.

    Brackets inside quoted scalars and comments are skipped; one inside a plain scalar counts
    as if it opened a collection, which only costs speed (the slower parser is chosen).
    """
    depth = deepest = 0
    skip_to = 0
    for m in _SPECIAL.finditer(text):
        i = m.start()
        if i < skip_to:
            continue
        c = m.group()
        prev = text[i - 1] if i else "\n"
        if c in "[{":
            depth += 1
            deepest = max(deepest, depth)
        elif c in "]}":
            depth = max(0, depth - 1)
        elif c == "#":
            if prev in " \t\r\n":
                end = text.find("\n", i)
                skip_to = len(text) if end < 0 else end
        elif prev in " \t\r\n[{,:-?":  # a quote that opens a quoted scalar
            skip_to = _quoted_end(text, i)
    return deepest


def _quoted_end(text: str, start: int) -> int:
    """The offset just past the quoted scalar opening at ``start`` (or the end of the text)."""
    quote = text[start]
    j = start + 1
    while j < len(text):
        if quote == '"' and text[j] == "\\":
            j += 2
        elif text[j] == quote:
            if quote == "'" and text.startswith("''", j):
                j += 2
            else:
                return j + 1
        else:
            j += 1
    return len(text)


def _loader(text: str) -> Any:
    if CParser is None or _flow_depth_bound(text) > MAX_DEPTH:
        return _PyLoader(text)
    return _CLoader(text)


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
    text: str | None = None
    """The scalar as written in the file (before YAML typed it), where it came from a file."""


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
    """Parse one YAML document; ``None`` for an empty document.

    Raises :class:`YamlSyntaxError` (one line, with a position) for anything that is not a
    single well-formed YAML document of plain data.
    """
    loader = _loader(text)
    try:
        node = loader.get_single_node()
        if node is None:
            return None
        return _Converter(loader, file).convert(node)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        problem = _one_line(exc.problem or "invalid YAML")
        if exc.context and exc.context not in problem:
            context = _one_line(exc.context)
            cm = exc.context_mark
            if cm is not None and mark is not None and (cm.line, cm.column) != (mark.line, mark.column):
                context += f" (started at line {cm.line + 1}, column {cm.column + 1})"
            problem = f"{context}: {problem}"
        where = _mark(file, mark)
        hint = _hint(problem, _char_at(text, where))
        raise YamlSyntaxError(where, f"YAML syntax error: {problem}{hint}") from None
    except yaml.reader.ReaderError as exc:
        line, column = _position(text, exc.position)
        char = exc.character if isinstance(exc.character, int) else ord(str(exc.character)[:1] or "\0")
        raise YamlSyntaxError(
            Mark(file, line, column), f"character U+{char:04X} is not allowed in YAML; remove it or write it as an escape in a double-quoted string"
        ) from None
    except yaml.YAMLError as exc:
        raise YamlSyntaxError(Mark(file, 1, 1), f"YAML syntax error: {_one_line(str(exc))}") from None
    finally:
        loader.dispose()


def _one_line(message: str) -> str:
    return " ".join(str(message).split())


def _char_at(text: str, mark: Mark) -> str:
    lines = text.split("\n", mark.line)
    if mark.line - 1 < len(lines):
        line = lines[mark.line - 1]
        if mark.column - 1 < len(line):
            return line[mark.column - 1]
    return ""


def _hint(problem: str, char: str) -> str:
    """What would be right, for the syntax errors people actually make."""
    if char == "\t" or "'\\t'" in problem:
        return "; indent with spaces, not tabs"
    if "mapping values are not allowed" in problem or "did not find expected key" in problem:
        return "; check this line's indentation against the lines above it"
    if "did not find expected ',' or ']'" in problem:
        return "; close the list with ']'"
    if "did not find expected ',' or '}'" in problem:
        return "; close the mapping with '}'"
    if "could not determine a constructor" in problem:
        return "; regions.yaml holds plain data: remove the tag"
    if "expected a single document" in problem:
        return "; keep one document per file (no second '---')"
    if "found undefined alias" in problem:
        return "; define the anchor (&name) before using it"
    return ""


def _position(text: str, offset: int) -> tuple[int, int]:
    """1-based line and column of a character offset."""
    offset = max(0, min(offset, len(text)))
    line = text.count("\n", 0, offset) + 1
    return line, offset - (text.rfind("\n", 0, offset) + 1) + 1


class _Converter:
    """Turns PyYAML's node graph into :data:`YNode` wrappers.

    Aliases are expanded (a node reached twice is converted twice), within :data:`MAX_NODES`;
    an alias that refers to its own ancestor is reported. ``<<`` merge keys are applied the way
    PyYAML applies them: explicit keys win over merged ones.
    """

    def __init__(self, loader: Any, file: str):
        self.loader = loader
        self.file = file
        self.count = 0
        self.active: set[int] = set()

    def mark(self, node: yaml.Node) -> Mark:
        return _mark(self.file, node.start_mark)

    def fail(self, node: yaml.Node, message: str) -> None:
        raise yaml.composer.ComposerError(None, None, message, node.start_mark)

    def convert(self, node: yaml.Node) -> YNode:
        if id(node) in self.active:
            self.fail(node, "an alias refers to a node that contains it (a recursive structure)")
        self.count += 1
        if self.count > MAX_NODES:
            self.fail(node, f"more than {MAX_NODES} values after expanding aliases; a regions file needs far fewer")
        self.active.add(id(node))
        try:
            if isinstance(node, yaml.MappingNode):
                return self.mapping(node)
            if isinstance(node, yaml.SequenceNode):
                return Seq([self.convert(n) for n in node.value], self.mark(node))
            return Scalar(self.loader.construct_object(node, deep=True), self.mark(node), node.value)
        finally:
            self.active.discard(id(node))

    def mapping(self, node: yaml.MappingNode) -> Map:
        items: dict[str, YNode] = {}
        keys: dict[str, Mark] = {}
        dups: list[tuple[str, Mark]] = []
        bad: list[tuple[Any, Mark]] = []
        merged: list[tuple[str, YNode, Mark]] = []
        for knode, vnode in node.value:
            kmark = self.mark(knode)
            if knode.tag == MERGE_TAG:
                merged.extend(self.merge_source(vnode))
                continue
            key = self.loader.construct_object(knode, deep=True) if isinstance(knode, yaml.ScalarNode) else None
            if not isinstance(key, str):
                bad.append((key if isinstance(knode, yaml.ScalarNode) else _node_kind(knode), kmark))
                continue
            if key in items:
                dups.append((key, kmark))
                continue
            items[key] = self.convert(vnode)
            keys[key] = kmark
        for key, value, kmark in merged:
            if key not in items:
                items[key] = value
                keys[key] = kmark
        return Map(items, keys, self.mark(node), dups, bad)

    def merge_source(self, vnode: yaml.Node) -> list[tuple[str, YNode, Mark]]:
        sources = vnode.value if isinstance(vnode, yaml.SequenceNode) else [vnode]
        out: list[tuple[str, YNode, Mark]] = []
        for src in sources:
            if not isinstance(src, yaml.MappingNode):
                self.fail(src, "'<<' merges a mapping or a list of mappings")
            m = self.convert(src)
            assert isinstance(m, Map)
            out.extend((k, v, m.keys[k]) for k, v in m.items.items())
        # with a list, earlier mappings win over later ones
        seen: set[str] = set()
        first = []
        for k, v, mk in out:
            if k not in seen:
                seen.add(k)
                first.append((k, v, mk))
        return first


def _node_kind(node: yaml.Node) -> str:
    return "a mapping" if isinstance(node, yaml.MappingNode) else "a list"


def plain(node: YNode | None) -> Any:
    """The node's value as plain Python data (marks dropped)."""
    if node is None:
        return None
    if isinstance(node, Map):
        return {k: plain(v) for k, v in node.items.items()}
    if isinstance(node, Seq):
        return [plain(i) for i in node.items]
    return node.value
