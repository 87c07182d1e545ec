#!/usr/bin/env python3
"""Prints the arrows between flowgate's modules and fails on an import cycle.

An arrow A -> B means a file of module A names `crate::B` (or reaches B through
`super::`). Test modules (`#[cfg(test)]` blocks and `tests.rs` files) are left out:
they may reach anywhere. Usage:

    scripts/module-deps.py            # top-level arrows, then cycles (exit 1 if any)
    scripts/module-deps.py --inner    # also arrows between the files of one module
"""
import re
import sys
from pathlib import Path

SRC = Path(__file__).resolve().parent.parent / "src"
# Upward arrows made on purpose, with the reason; left out of the cycle check.
DELIBERATE = {
    ("secrets", "proxy"): "the Permit seal: only the proxy issues a Permit, so only admitted calls reach a vault",
}
CRATE_REF = re.compile(r"\bcrate::([a-z_][a-z0-9_]*)(?:::([a-z_][a-z0-9_]*))?")
SUPER_REF = re.compile(r"\bsuper::([a-z_][a-z0-9_]*)")


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


def arrows(inner: bool) -> dict[str, set[str]]:
    graph: dict[str, set[str]] = {}
    modules = {module_path(f)[0] for f in SRC.rglob("*.rs") if module_path(f)}
    for file in sorted(SRC.rglob("*.rs")):
        path = module_path(file)
        if not path or path[-1] == "tests":
            continue
        text = strip_comments(without_tests(file.read_text()))
        top = path[0]
        for m in CRATE_REF.finditer(text):
            target, sub = m.group(1), m.group(2)
            if target not in modules:
                continue
            if target != top:
                graph.setdefault(top, set()).add(target)
            elif inner and sub and len(path) >= 1:
                here = "/".join(path[:2])
                there = f"{top}/{sub}"
                if here != there and (SRC / top / f"{sub}.rs").exists():
                    graph.setdefault(here, set()).add(there)
        if inner and len(path) >= 2:
            here = "/".join(path[:2])
            for m in SUPER_REF.finditer(text):
                sub = m.group(1)
                there = f"{top}/{sub}" if (SRC / top / f"{sub}.rs").exists() else top
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
    loops = cycles(downward)
    for loop in loops:
        print(f"CYCLE: {' <-> '.join(loop)}", file=sys.stderr)
    return 1 if loops else 0


if __name__ == "__main__":
    sys.exit(main())
