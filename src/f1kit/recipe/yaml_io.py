"""The YAML of recipes: a safe loader that refuses duplicate keys and documents past the bounds,
and the dumper that writes resolved recipes.

Bounds, so that any document gets a clear error in well under a second: at most
`MAX_RECIPE_BYTES` (1 MiB) of text, at most `MAX_YAML_NODES` values once aliases expand (a "billion
laughs" document of 2 KB expands to 9**9 strings; a recipe has a few hundred). Aliases are counted
on the composed node graph, before anything is constructed, so the copies are never made.
"""

from typing import Any

import yaml

from f1kit.recipe.fields import short_repr

MAX_RECIPE_BYTES = 2**20
MAX_YAML_NODES = 100_000


class TooLarge(ValueError):
    """A document past the bounds."""


def load_yaml(text: str) -> Any:
    """One YAML document as plain data (a SafeLoader); `TooLarge` past the bounds, a
    ``yaml.YAMLError`` (or ValueError, for a number Python refuses to read) when malformed."""
    if len(text) > MAX_RECIPE_BYTES:
        raise TooLarge(too_big(len(text.encode("utf-8", "replace"))))
    return yaml.load(text, Loader=_StrictLoader)


def dump_yaml(data: Any) -> str:
    """Block style for sections, flow style for short lists of scalars, keys in the given order."""
    return yaml.dump(data, Dumper=_Dumper, sort_keys=False, allow_unicode=True, width=100)


def too_big(size: int) -> str:
    return (
        f"the recipe is {size / 2**20:.1f} MiB; the limit is {MAX_RECIPE_BYTES // 2**20} MiB "
        "(a recipe is a few KB)"
    )


def yaml_message(err: Exception) -> str:
    """A loading error as one line: the problem and where."""
    mark = getattr(err, "problem_mark", None)
    problem = getattr(err, "problem", None) or (str(err).splitlines() or [type(err).__name__])[0]
    problem = problem if len(problem) <= 300 else problem[:297] + "..."
    return f"{problem} at line {mark.line + 1}, column {mark.column + 1}" if mark else problem


# libyaml's parser/emitter when PyYAML was built with it (same documents, ~10x faster).
_SafeLoader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
_SafeDumper = getattr(yaml, "CSafeDumper", yaml.SafeDumper)


def _expanded_size(root: yaml.Node) -> int:
    """Values in the document under ``root`` once every alias is expanded into a copy of its
    anchor (`TooLarge` past MAX_YAML_NODES); counted over the node graph, not the copies."""
    sizes: dict[int, int] = {}
    stack: list[tuple[yaml.Node, bool]] = [(root, False)]
    open_nodes: set[int] = set()
    while stack:
        node, children_done = stack.pop()
        if id(node) in sizes:
            continue
        if isinstance(node, yaml.MappingNode):
            children = [n for pair in node.value for n in pair]
        elif isinstance(node, yaml.SequenceNode):
            children = list(node.value)
        else:
            children = []
        if not children_done:
            if id(node) in open_nodes:
                raise TooLarge(
                    "an alias refers to its own anchor (a structure that contains itself); "
                    "aliases expand to a copy of their anchor, so it has no end"
                )
            open_nodes.add(id(node))
            stack.append((node, True))
            stack.extend((c, False) for c in children if id(c) not in sizes)
            continue
        open_nodes.discard(id(node))
        sizes[id(node)] = 1 + sum(sizes[id(c)] for c in children)
        if sizes[id(node)] > MAX_YAML_NODES:
            raise TooLarge(
                f"more than {MAX_YAML_NODES} values once aliases expand (a recipe has a few "
                f"hundred); the value at line {node.start_mark.line + 1} alone has "
                f"{sizes[id(node)]}"
            )
    return sizes[id(root)]


class _StrictLoader(_SafeLoader):
    """A safe loader that refuses duplicate keys (plain YAML keeps the last one silently) and
    documents that expand past MAX_YAML_NODES values (checked before anything is built)."""

    def get_single_node(self) -> yaml.Node | None:
        node = super().get_single_node()
        if node is not None:
            _expanded_size(node)
        return node

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict:
        seen: dict[Any, int] = {}
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=True)
            line = key_node.start_mark.line + 1
            if key in seen:
                raise yaml.constructor.ConstructorError(
                    None,
                    None,
                    f"duplicate key {short_repr(key)} (lines {seen[key]} and {line})",
                    key_node.start_mark,
                )
            seen[key] = line
        return super().construct_mapping(node, deep=deep)


class _Dumper(_SafeDumper):
    """Block style for sections, flow style for short lists of scalars ([-9, -6, -3, 0])."""


def _represent_list(dumper: _SafeDumper, items: list) -> yaml.Node:
    flow = all(not isinstance(i, (dict, list)) for i in items) and len(repr(items)) <= 80
    return dumper.represent_sequence("tag:yaml.org,2002:seq", items, flow_style=flow)


_Dumper.add_representer(list, _represent_list)
