"""YAML documents that remember where each value came from, so errors name a line.

PyYAML's composer keeps a start mark on every node; we build plain Python values from the
nodes and a map from each JSON path (tuple of keys and indexes) to its line, which
jsonschema's ``absolute_path`` indexes into.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from yaml.constructor import SafeConstructor

JsonPath = tuple[str | int, ...]


@dataclass(frozen=True, slots=True)
class Finding:
    """One finding, printed ``file:line: message`` as compilers do."""

    file: str
    line: int
    message: str

    def __str__(self) -> str:
        return f"{self.file}:{self.line}: {self.message}"

    def as_dict(self) -> dict[str, Any]:
        return {"file": self.file, "line": self.line, "message": self.message}


class RuleFileError(Exception):
    """A rule or test file is invalid; ``findings`` lists every finding with its line."""

    def __init__(self, findings: Sequence[Finding]) -> None:
        super().__init__("; ".join(str(p) for p in findings))
        self.findings = list(findings)


@dataclass
class Document:
    name: str
    data: Any
    lines: dict[JsonPath, int] = field(default_factory=dict)

    def line(self, path: Sequence[str | int]) -> int:
        """The line of the deepest known node on ``path`` (1-based)."""
        key = tuple(path)
        while key not in self.lines and key:
            key = key[:-1]
        return self.lines.get(key, 1)

    def finding(self, path: Sequence[str | int], message: str) -> Finding:
        return Finding(self.name, self.line(path), message)


def parse(text: str, name: str) -> Document:
    """Parse one YAML document; raise :class:`RuleFileError` with the line on bad YAML."""
    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = mark.line + 1 if mark is not None else 1
        reason = getattr(exc, "problem", None) or str(exc)
        raise RuleFileError([Finding(name, line, f"invalid YAML: {reason}")]) from exc
    doc = Document(name, None)
    if node is None:
        return doc
    constructor = SafeConstructor()
    try:
        doc.data = _build(node, (), doc.lines, constructor)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = mark.line + 1 if mark is not None else 1
        raise RuleFileError([Finding(name, line, f"invalid YAML: {exc}")]) from exc
    return doc


def read(path: Path) -> Document:
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise RuleFileError([Finding(str(path), 0, f"cannot read: {exc}")]) from exc
    return parse(text, str(path))


def _build(
    node: yaml.Node, path: JsonPath, lines: dict[JsonPath, int], constructor: SafeConstructor
) -> Any:
    lines[path] = node.start_mark.line + 1
    if isinstance(node, yaml.MappingNode):
        out: dict[Any, Any] = {}
        for key_node, value_node in node.value:
            key = constructor.construct_object(key_node, deep=True)
            if key in out:
                raise yaml.constructor.ConstructorError(
                    None, None, f"duplicate key {key!r}", key_node.start_mark
                )
            out[key] = _build(value_node, (*path, key), lines, constructor)
        return out
    if isinstance(node, yaml.SequenceNode):
        return [_build(item, (*path, i), lines, constructor) for i, item in enumerate(node.value)]
    return constructor.construct_object(node, deep=True)
