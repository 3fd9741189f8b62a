"""``cosyvoice.yaml`` read as inert data: hyperpyyaml tags kept as :class:`TaggedNode` s, ``!ref`` resolved.

The official loader (hyperpyyaml) *executes* the file (``!new:pkg.Class`` imports and builds classes); here
``yaml.SafeLoader`` keeps each tag as data, and ``!ref <key>`` / ``!ref <a> * <b>`` resolve by key with plain
arithmetic only. ``config`` reads the typed configuration from the result.
"""

from __future__ import annotations

import ast
import operator
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import yaml

from .errors import DecoderConfigError


@dataclass
class TaggedNode:
    """A hyperpyyaml tag kept as data: ``!new:pkg.Class {args}`` -> kind "new", target "pkg.Class"."""

    kind: str
    target: str
    value: Any

    @property
    def class_name(self) -> str:
        return self.target.rsplit(".", 1)[-1]


@dataclass
class _Ref:
    expr: str


class _SafeTagLoader(yaml.SafeLoader):
    """SafeLoader that turns every ``!tag`` into inert data instead of refusing or executing it."""


def _construct_tagged(loader: yaml.SafeLoader, suffix: str, node: yaml.Node) -> Any:
    if suffix in ("ref", "copy"):
        return _Ref(str(loader.construct_scalar(node)))
    if isinstance(node, yaml.MappingNode):
        value: Any = loader.construct_mapping(node, deep=True)
    elif isinstance(node, yaml.SequenceNode):
        value = loader.construct_sequence(node, deep=True)
    else:
        value = loader.construct_scalar(node)
    if suffix == "tuple":
        return tuple(value) if isinstance(value, list) else value
    kind, _, target = suffix.partition(":")
    return TaggedNode(kind=kind, target=target, value=value)


_SafeTagLoader.add_multi_constructor("!", _construct_tagged)

_REF_PATTERN = re.compile(r"<([^<>]+)>")
_BIN_OPS: dict[type, Callable[[Any, Any], Any]] = {
    ast.Add: operator.add, ast.Sub: operator.sub, ast.Mult: operator.mul, ast.Div: operator.truediv,
    ast.FloorDiv: operator.floordiv, ast.Mod: operator.mod, ast.Pow: operator.pow,
}


def _lookup(root: dict, key: str, seen: tuple[str, ...]) -> Any:
    parts = [p for p in re.split(r"[.\[\]]", key) if p]
    node: Any = root
    for part in parts:
        if isinstance(node, dict) and part in node:
            node = node[part]
        elif isinstance(node, TaggedNode) and isinstance(node.value, dict) and part in node.value:
            node = node.value[part]
        else:
            raise DecoderConfigError(f"cosyvoice.yaml: '!ref <{key}>' points at nothing (no key {part!r}).")
    return _resolve(node, root, seen + (key,))


def _arith(expr: str) -> Any:
    def ev(n: ast.AST) -> Any:
        if isinstance(n, ast.Expression):
            return ev(n.body)
        if isinstance(n, ast.Constant) and isinstance(n.value, (int, float)):
            return n.value
        if isinstance(n, ast.BinOp) and type(n.op) in _BIN_OPS:
            return _BIN_OPS[type(n.op)](ev(n.left), ev(n.right))
        if isinstance(n, ast.UnaryOp) and isinstance(n.op, (ast.USub, ast.UAdd)):
            return -ev(n.operand) if isinstance(n.op, ast.USub) else ev(n.operand)
        raise DecoderConfigError(f"cosyvoice.yaml: cannot evaluate '!ref {expr}' (only numbers and + - * / allowed).")

    try:
        return ev(ast.parse(expr, mode="eval"))
    except SyntaxError as exc:
        raise DecoderConfigError(f"cosyvoice.yaml: cannot evaluate '!ref {expr}': {exc.msg}.") from exc


def _resolve(node: Any, root: dict, seen: tuple[str, ...] = ()) -> Any:
    if isinstance(node, _Ref):
        keys = _REF_PATTERN.findall(node.expr)
        for key in keys:
            if key in seen:
                raise DecoderConfigError(f"cosyvoice.yaml: '!ref <{key}>' refers to itself.")
        whole = _REF_PATTERN.fullmatch(node.expr.strip())
        if whole:
            return _lookup(root, whole.group(1), seen)
        text = _REF_PATTERN.sub(lambda m: repr(_lookup(root, m.group(1), seen)), node.expr)
        return _arith(text)
    if isinstance(node, dict):
        return {k: _resolve(v, root, seen) for k, v in node.items()}
    if isinstance(node, list):
        return [_resolve(v, root, seen) for v in node]
    if isinstance(node, tuple):
        return tuple(_resolve(v, root, seen) for v in node)
    if isinstance(node, TaggedNode):
        return TaggedNode(node.kind, node.target, _resolve(node.value, root, seen))
    return node


def parse_yaml_text(text: str) -> dict:
    """The yaml as plain data with inert :class:`TaggedNode` s and every ``!ref`` resolved."""
    try:
        raw = yaml.load(text, Loader=_SafeTagLoader)
    except yaml.YAMLError as exc:
        raise DecoderConfigError(f"cosyvoice.yaml is not valid YAML: {exc}") from exc
    if not isinstance(raw, dict):
        raise DecoderConfigError("cosyvoice.yaml must be a mapping at the top level (mel_conf, flow, hift).")
    return _resolve(raw, raw)
