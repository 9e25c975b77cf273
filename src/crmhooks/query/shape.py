"""``expand`` and ``load-only``: which related records to embed and which fields to keep.

Both are parsed into trees checked against the entity types, so a mistake is a 400 naming the
path, and applied to rendered records by ``query.render``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from crmhooks.errors import ParameterInvalid
from crmhooks.limits import Limits
from crmhooks.schema.registry import BUILTIN, GROUPS
from crmhooks.schema.types import EntityType, Kind

# relation name -> the expansions below it
ExpandTree = dict[str, "ExpandTree"]
# field name -> the fields kept below it (None: the whole value)
LoadTree = dict[str, "LoadTree | None"]


@dataclass(frozen=True)
class Shape:
    expand: ExpandTree = field(default_factory=dict)
    load_only: LoadTree | None = None  # None: every field
    # Records of one expanded to-many list per parent (webhook payloads); None: all of them.
    list_cap: int | None = None


def related_type(et: EntityType, name: str) -> tuple[EntityType, bool] | None:
    """The entity type a relation name leads to, and whether it is to-many."""
    for f in et.relations:
        for route, shown in f.uri_by_kind:
            if shown == name:
                return BUILTIN[route], False
        if f.relation_name == name and f.target is not None and not f.uri_by_kind:
            return (BUILTIN.get(f.target) or GROUPS[f.target]), False
    for tm in et.to_many:
        if tm.name == name:
            return BUILTIN[tm.source], True
    return None


def check_paths(paths: Sequence[str], where: str, limits: Limits, *, expand: bool) -> None:
    """``paths`` within ``max_shape_entries`` and, for ``expand``, ``max_expand_depth``."""
    if len(paths) > limits.max_shape_entries:
        raise ParameterInvalid(
            f"{where}: {len(paths)} entries; the limit is {limits.max_shape_entries} "
            "(max_shape_entries)"
        )
    for path in paths if expand else ():
        depth = path.count(".") + 1
        if depth > limits.max_expand_depth:
            raise ParameterInvalid(
                f"{where}: {path[:200]!r} is {depth} relations deep; the limit is "
                f"{limits.max_expand_depth} (max_expand_depth)"
            )


def _expand_tree(et: EntityType, paths: Sequence[str], where: str) -> ExpandTree:
    tree: ExpandTree = {}
    for path in paths:
        if not path:
            raise ParameterInvalid(f"{where}: empty relation name")
        node, current = tree, et
        for name in path.split("."):
            found = related_type(current, name)
            if found is None:
                raise ParameterInvalid(f"{where}: {current.name} has no relation {name!r}")
            current = found[0]
            node = node.setdefault(name, {})
    return tree


def _load_tree(et: EntityType, paths: Sequence[str], expand: ExpandTree, where: str) -> LoadTree:
    tree: LoadTree = {}
    for path in paths:
        if not path:
            raise ParameterInvalid(f"{where}: empty field name")
        _add_load_path(et, path.split("."), expand, tree, where, path)
    return tree


def _add_load_path(
    et: EntityType,
    parts: list[str],
    expand: ExpandTree,
    tree: LoadTree,
    where: str,
    path: str,
) -> None:
    head, rest = parts[0], parts[1:]
    f = et.field(head)
    related = related_type(et, head)
    if f is None and related is None:
        raise ParameterInvalid(f"{where}: {et.name} has no field {head!r} (in {path!r})")
    if not rest:
        tree[head] = None
        return
    if f is not None and f.kind is Kind.OBJECT:
        subs = {s.name for s in f.subfields}
        if rest[0] not in subs or len(rest) > 1:
            raise ParameterInvalid(f"{where}: {head!r} has no sub-field {'.'.join(rest)!r}")
        sub = tree.get(head, {})
        if sub is not None:
            sub[rest[0]] = None
            tree[head] = sub
        return
    if related is None or head not in expand:
        raise ParameterInvalid(f"{where}: {path!r} reaches into {head!r}, which is not expanded")
    existing = tree.get(head, {})
    if existing is None:  # the whole value is kept already
        return
    _add_load_path(related[0], rest, expand[head], existing, where, path)
    tree[head] = existing


def parse_shape(
    et: EntityType,
    expand: Sequence[str] | None,
    load_only: Sequence[str] | None,
    expand_name: str = "expand",
    load_name: str = "load-only",
    limits: Limits | None = None,
) -> Shape:
    """Both trees, checked against the entity types and, when given, ``limits``."""
    if limits is not None:
        check_paths(expand or [], expand_name, limits, expand=True)
        check_paths(load_only or [], load_name, limits, expand=False)
    tree = _expand_tree(et, expand or [], expand_name)
    loads = None if load_only is None else _load_tree(et, load_only, tree, load_name)
    return Shape(tree, loads)


def worst_records(et: EntityType, tree: ExpandTree, list_cap: int) -> int:
    """The most records one record shown with ``tree`` can hold, itself included, when each
    expanded to-many list holds at most ``list_cap`` records."""
    total = 1
    for name, sub in tree.items():
        found = related_type(et, name)
        assert found is not None  # the tree was checked against the types
        target, to_many = found
        total += (list_cap if to_many else 1) * worst_records(target, sub, list_cap)
    return total


def prune(record: Any, tree: LoadTree | None) -> Any:
    """Keep only the fields of ``tree`` (at every depth, through lists)."""
    if tree is None or record is None:
        return record
    if isinstance(record, list):
        return [prune(item, tree) for item in record]
    if not isinstance(record, dict):
        return record
    return {name: prune(record[name], sub) for name, sub in tree.items() if name in record}
