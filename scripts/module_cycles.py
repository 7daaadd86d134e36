#!/usr/bin/env python3
"""Fails when the crate's modules import each other in a cycle.

Reads every module path in src/: `crate::...`, `super::...` (repeated),
`self::...` and paths that start with a child module's name (2018 paths),
with `use` groups (`use crate::{a, b::c}`) expanded; maps each to the
deepest module it names, or to the crate root (`crate`) for items defined
in lib.rs (`crate::RunError`). Then looks for cycles between top-level
modules (`server` -> `proxy` -> `server`, the root included: a module
using a root item depends on everything the root uses) and between sibling
submodules. A module using its own parent or children is not a cycle.

    python3 scripts/module_cycles.py          # prints the layers, exit 0
                                              # or each cycle, exit 1
"""
import pathlib
import re
import sys

SRC = pathlib.Path(__file__).resolve().parent.parent / "src"
IGNORED = {"main"}  # the binary, not a module of the library


def module_of(path: pathlib.Path) -> tuple:
    parts = list(path.relative_to(SRC).with_suffix("").parts)
    if parts[-1] in ("mod", "lib"):
        parts.pop()
    return tuple(parts)


ROOT = ("crate",)


def module_paths(text: str, here: tuple, children: set):
    """Every absolute module path the text names, groups expanded: after
    `crate::`, `super::` (from `here`), `self::`, or a child module's name."""
    text = re.sub(r"//[^\n]*", "", text)
    for match in re.finditer(r"(?<![A-Za-z0-9_:])((?:super::)+|self::|crate::|([a-z_][a-z0-9_]*)::)", text):
        head = match.group(1)
        if head == "crate::":
            base = ()
        elif head == "self::":
            base = here
        elif head.startswith("super::"):
            ups = head.count("super::")
            if ups > len(here):
                continue
            base = here[: len(here) - ups]
        elif match.group(2) in children:
            # A child module named without `self::` (only at the start of a
            # path, not after another `::`).
            yield here + (match.group(2),) + next(expand(text, match.end(), ()), ())
            continue
        else:
            continue
        yield from expand(text, match.end(), base)


def expand(text, pos, prefix):
    idents = []
    while True:
        ident = re.match(r"[A-Za-z_][A-Za-z0-9_]*", text[pos:])
        if ident:
            idents.append(ident.group())
            pos += ident.end()
            if text.startswith("::", pos):
                pos += 2
                continue
            yield prefix + tuple(idents)
            return
        if text.startswith("{", pos):
            depth, start, items = 1, pos + 1, []
            i = start
            while i < len(text) and depth:
                if text[i] == "{":
                    depth += 1
                elif text[i] == "}":
                    depth -= 1
                elif text[i] == "," and depth == 1:
                    items.append((start, i))
                    start = i + 1
                i += 1
            items.append((start, i - 1))
            for begin, _ in items:
                j = begin
                while j < len(text) and text[j].isspace():
                    j += 1
                yield from expand(text, j, prefix + tuple(idents))
            return
        yield prefix + tuple(idents)
        return


def main() -> int:
    files = sorted(SRC.rglob("*.rs"))
    modules = {module_of(f) for f in files}
    edges = {}
    for file in files:
        source = module_of(file)
        if source and source[0] in IGNORED:
            continue
        children = {m[len(source)] for m in modules if len(m) == len(source) + 1 and m[: len(source)] == source}
        text = file.read_text()
        # An inline test module (last in the file by convention) names its
        # file's module as `super`: its paths are the file's own.
        text = re.split(r"#\[cfg\(test\)\]\s*mod tests\b", text)[0]
        for path in module_paths(text, source, children):
            # The deepest module the path names; an item of lib.rs is the root's.
            target = ROOT
            for depth in range(len(path), 0, -1):
                if path[:depth] in modules:
                    target = path[:depth]
                    break
            if not path or (target == ROOT and path[0] in modules):
                continue
            node = source or ROOT
            if node != target:
                edges.setdefault(node, set()).add(target)

    cycles = []
    # Top level: collapse every module to its first component.
    top = {}
    for source, targets in edges.items():
        for target in targets:
            if source[0] != target[0]:
                top.setdefault(source[0], set()).add(target[0])
    cycles += [" -> ".join(c) for c in find_cycles(top)]
    # Siblings inside one parent module.
    siblings = {}
    for source, targets in edges.items():
        for target in targets:
            common = 0
            while common < min(len(source), len(target)) and source[common] == target[common]:
                common += 1
            if common == len(source) or common == len(target):
                continue  # parent or child
            if common == 0:
                continue  # top level, checked above
            a, b = "::".join(source[: common + 1]), "::".join(target[: common + 1])
            siblings.setdefault(a, set()).add(b)
    cycles += [" -> ".join(c) for c in find_cycles(siblings)]

    if cycles:
        print("module import cycles:")
        for cycle in cycles:
            print(f"  {cycle}")
        return 1
    for layer, names in enumerate(layers(top)):
        print(f"layer {layer}: {' '.join(sorted(names))}")
    print("no module import cycles")
    return 0


def find_cycles(graph):
    """One cycle per strongly connected component with more than one node."""
    index, low, stack, on_stack, result = {}, {}, [], set(), []
    counter = [0]

    def visit(node):
        index[node] = low[node] = counter[0]
        counter[0] += 1
        stack.append(node)
        on_stack.add(node)
        for nxt in sorted(graph.get(node, ())):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                result.append(sorted(component) + [sorted(component)[0]])

    for node in sorted(set(graph) | {t for ts in graph.values() for t in ts}):
        if node not in index:
            visit(node)
    return result


def layers(graph):
    nodes = set(graph) | {t for ts in graph.values() for t in ts}
    placed, result = set(), []
    while nodes - placed:
        layer = {n for n in nodes - placed if graph.get(n, set()) <= placed}
        if not layer:
            break
        result.append(layer)
        placed |= layer
    return result


if __name__ == "__main__":
    sys.exit(main())
