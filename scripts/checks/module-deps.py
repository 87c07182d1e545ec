#!/usr/bin/env python3
"""Prints the arrows between flowgate's modules and fails on an import cycle.

An arrow A -> B means a file of module A names `crate::B` (or reaches B through
`super::`). Test modules (`#[cfg(test)]` blocks and `tests.rs` files) are left out:
they may reach anywhere.

With --inner, the files of one module are nodes too (`proxy/call`), and a child's
`super::X` (or `crate::proxy::X`) is resolved to where X lives: a sibling file when X
is one (`super::body`) or when the parent merely re-exports it from one
(`pub use body::X` in `proxy.rs`, or a plain `use body::X`: the arrow goes to
`proxy/body`, not up); the parent
itself (`proxy`) when X is defined in the parent's own file. A parent holds its children
(`mod call;`), so it counts as importing each of them: a child naming an item defined in
its parent is an arrow back up and closes a cycle, which fails like any other. Usage:

    scripts/checks/module-deps.py            # top-level arrows, then cycles (exit 1 if any)
    scripts/checks/module-deps.py --inner    # also arrows between the files of one module
"""
import re
import sys
from pathlib import Path

SRC = Path(__file__).resolve().parents[2] / "src"
# Upward arrows made on purpose, with the reason; left out of the cycle check.
DELIBERATE = {
    ("secrets", "proxy"): "the Permit seal: only the proxy issues a Permit, so only admitted calls reach a vault",
}
CRATE_REF = re.compile(r"\bcrate::([a-z_][a-z0-9_]*)(?:::([a-z_][a-z0-9_]*))?")
# `super::name`, `super::{a, b::c}`, `crate::top::{...}`: the use tree after the prefix.
SUPER_REF = re.compile(r"\bsuper::")


def module_path(file: Path) -> list[str]:
    parts = list(file.relative_to(SRC).with_suffix("").parts)
    if parts == ["lib"] or parts == ["main"]:
        return []
    if parts[-1] == "mod":
        parts = parts[:-1]
    return parts


def without_tests(text: str) -> str:
    """Drops `#[cfg(test)] mod … { … }` blocks by brace matching."""
    out, i = [], 0
    marker = re.compile(r"#\[cfg\(test\)\]\s*(?:#\[[^\]]*\]\s*)*mod\s+\w+\s*\{")
    while True:
        m = marker.search(text, i)
        if not m:
            out.append(text[i:])
            return "".join(out)
        out.append(text[i : m.start()])
        depth, j = 1, m.end()
        while depth and j < len(text):
            depth += {"{": 1, "}": -1}.get(text[j], 0)
            j += 1
        i = j


def strip_comments(text: str) -> str:
    return "\n".join(line.split("//", 1)[0] for line in text.splitlines())


def use_tree_heads(text: str, start: int) -> list[str]:
    """The first segment of each path in the use tree starting at `text[start]`:
    `name` -> [name]; `{a, b::c, self}` -> [a, b]."""
    m = re.match(r"\s*([A-Za-z_][A-Za-z0-9_]*)", text[start:])
    if m:
        return [m.group(1)]
    if not text[start:].lstrip().startswith("{"):
        return []
    i = text.index("{", start) + 1
    depth, item, heads = 1, "", []
    while depth and i < len(text):
        c = text[i]
        depth += {"{": 1, "}": -1}.get(c, 0)
        if depth == 1 and c == ",":
            heads.append(item)
            item = ""
        elif depth >= 1:
            item += c
        i += 1
    heads.append(item)
    names = [re.match(r"\s*([A-Za-z_][A-Za-z0-9_]*)", h) for h in heads]
    return [n.group(1) for n in names if n and n.group(1) != "self"]


def module_file(parts: list[str]) -> Path | None:
    for candidate in (SRC.joinpath(*parts).with_suffix(".rs"), SRC.joinpath(*parts, "mod.rs")):
        if candidate.exists():
            return candidate
    return None


def reexported_from(parent: list[str], name: str) -> str | None:
    """The child of `parent` that `parent` takes `name` from (`pub use child::…name…`, or a
    private `use child::…name…` that a child's `super::name` reaches)."""
    file = module_file(parent)
    if not file:
        return None
    text = strip_comments(without_tests(file.read_text()))
    for m in re.finditer(r"(?:\bpub(?:\([^)]*\))?\s+)?\buse\s+(?:self::)?([a-z_][a-z0-9_]*)::([^;]*);", text):
        child, rest = m.group(1), m.group(2)
        if re.search(rf"\b{re.escape(name)}\b", rest) and module_file(parent + [child]):
            return child
    return None


def resolve(parent: list[str], name: str) -> list[str]:
    """The module where `parent::name` lives: a child file, the child the parent
    re-exports it from, or the parent itself."""
    if module_file(parent + [name]):
        return parent + [name]
    child = reexported_from(parent, name)
    return parent + [child] if child else parent


def children(parent: list[str]) -> list[str]:
    file = module_file(parent)
    if not file:
        return []
    text = strip_comments(without_tests(file.read_text()))
    return [m.group(1) for m in re.finditer(r"^\s*(?:pub(?:\([^)]*\))?\s+)?mod\s+([a-z_][a-z0-9_]*)\s*;", text, re.M)]


def arrows(inner: bool) -> dict[str, set[str]]:
    graph: dict[str, set[str]] = {}
    modules = {module_path(f)[0] for f in SRC.rglob("*.rs") if module_path(f)}
    for file in sorted(SRC.rglob("*.rs")):
        path = module_path(file)
        if not path or path[-1] == "tests":
            continue
        text = strip_comments(without_tests(file.read_text()))
        top = path[0]
        here = "/".join(path[:2])
        for m in CRATE_REF.finditer(text):
            target, sub = m.group(1), m.group(2)
            if target not in modules:
                continue
            if target != top:
                graph.setdefault(top, set()).add(target)
            elif inner and len(path) >= 2 and text.startswith("::", m.end(1)):
                # `crate::top::…` from inside `top`: as `super::…` from a direct child.
                for name in use_tree_heads(text, m.start(1) + len(target) + 2) if not sub else [sub]:
                    there = "/".join(resolve([top], name)[:2])
                    if there != here:
                        graph.setdefault(here, set()).add(there)
            elif inner and sub:
                there = f"{top}/{sub}"
                if here != there and module_file([top, sub]):
                    graph.setdefault(here, set()).add(there)
        if inner and len(path) >= 2:
            parent = path[:-1]
            for m in SUPER_REF.finditer(text):
                if text.startswith("super::", m.end()):
                    continue  # `super::super::`: not used in this crate
                for name in use_tree_heads(text, m.end()):
                    there = "/".join(resolve(parent, name)[:2])
                    if there != here:
                        graph.setdefault(here, set()).add(there)
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one member (Tarjan)."""
    index, low, stack, on, found, counter = {}, {}, [], set(), [], [0]

    def visit(v: str) -> None:
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in sorted(graph.get(v, ())):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    sys.setrecursionlimit(10000)
    for v in sorted(set(graph) | {w for ws in graph.values() for w in ws}):
        if v not in index:
            visit(v)
    return found


def main() -> int:
    inner = "--inner" in sys.argv
    graph = arrows(inner)
    for source in sorted(graph):
        targets = [t + (" (deliberate)" if (source, t) in DELIBERATE else "") for t in sorted(graph[source])]
        print(f"{source} -> {', '.join(targets)}")
    downward = {s: {t for t in ts if (s, t) not in DELIBERATE} for s, ts in graph.items()}
    if inner:
        # A parent holds its children: a child's arrow back up to it closes a cycle.
        for source in list(graph):
            for target in graph[source]:
                if "/" in source and target == source.split("/")[0]:
                    downward.setdefault(target, set()).add(source)
    loops = cycles(downward)
    for loop in loops:
        print(f"CYCLE: {' <-> '.join(loop)}", file=sys.stderr)
    return 1 if loops else 0


if __name__ == "__main__":
    sys.exit(main())
