#!/usr/bin/env python3
"""Lists the `crate::` / `super::` edges between the modules (files) of each library crate and
fails on any two modules that import each other (directly: a 2-cycle).

    python3 scripts/module_cycles.py [--edges] [CRATE_DIR ...]

Without CRATE_DIR it checks core, dedup, storage, prompts, trainer, models and generator.
A module is a file (`a/mod.rs` is `a`). Paths inside a `#[cfg(test)]` module count as test edges:
listed with --edges, never part of a cycle. Exit status 1 when a cycle is found.
"""

import re
import sys
from pathlib import Path

DEFAULT = ["core", "dedup", "storage", "prompts", "trainer", "models", "generator"]


def modules(src: Path) -> dict:
    """Module path (tuple) -> file, for every .rs file under src."""
    out = {}
    for f in sorted(src.rglob("*.rs")):
        parts = list(f.relative_to(src).with_suffix("").parts)
        if parts[-1] in ("mod", "lib", "main"):
            parts = parts[:-1]
        out[tuple(parts)] = f
    return out


def strip_comments(text: str) -> str:
    text = re.sub(r"/\*.*?\*/", "", text, flags=re.S)
    text = re.sub(r'"(?:[^"\\]|\\.)*"', '""', text)
    return re.sub(r"//.*", "", text)


def expand(tree: str) -> list:
    """`a::{b, c::{d, e}}` -> ["a::b", "a::c::d", "a::c::e"] (whitespace removed)."""
    tree = re.sub(r"\s+", "", tree)
    i = tree.find("{")
    if i < 0:
        return [tree]
    head, body = tree[:i], tree[i + 1 : tree.rfind("}")]
    items, depth, cur = [], 0, ""
    for ch in body:
        if ch == "," and depth == 0:
            items.append(cur)
            cur = ""
            continue
        depth += (ch == "{") - (ch == "}")
        cur += ch
    items.append(cur)
    return [p for it in items if it for p in expand(head + it)]


def resolve(path: list, mods: dict):
    """The longest prefix of `path` that names a module."""
    for n in range(len(path), 0, -1):
        if tuple(path[:n]) in mods:
            return tuple(path[:n])
    return None


def edges_of(me: tuple, text: str, mods: dict):
    """(target module, is_test) for each path out of module `me`."""
    text = strip_comments(text)
    test_at = len(text)
    m = re.search(r"#\[cfg\(test\)\]\s*(pub(\(crate\))?\s+)?mod\s+\w+\s*\{", text)
    if m:
        test_at = m.start()
    paths = []
    for m in re.finditer(r"\buse\s+((?:crate|super)::[^;]*);", text):
        paths += [(p, m.start()) for p in expand(m.group(1))]
    for m in re.finditer(r"(?<![\w:])((?:crate|super)(?:::\w+)+)", text):
        paths.append((m.group(1), m.start()))
    out = set()
    for p, at in paths:
        is_test = at >= test_at
        segs = p.split("::")
        if segs[0] == "crate":
            base, segs = [], segs[1:]
        else:
            # `super` in an inline test module is this file; in the file itself, the parent.
            base = list(me) if is_test else list(me[:-1])
            while segs and segs[0] == "super":
                segs = segs[1:]
        target = resolve(base + segs, mods)
        if target is not None and target != me and target != ():
            out.add((target, is_test))
    return out


def check(crate: Path, show_edges: bool) -> int:
    src = crate / "src"
    mods = modules(src)
    edges = set()
    for me, f in mods.items():
        for target, is_test in edges_of(me, f.read_text(), mods):
            edges.add((me, target, is_test))
            if show_edges:
                tag = " (test)" if is_test else ""
                print(f"{crate.name}: {'::'.join(me) or 'lib'} -> {'::'.join(target)}{tag}")
    real = {(a, b) for a, b, t in edges if not t}
    cycles = sorted({tuple(sorted((a, b))) for a, b in real if (b, a) in real})
    for a, b in cycles:
        print(f"{crate.name}: cycle {'::'.join(a)} <-> {'::'.join(b)}")
    return len(cycles)


def main() -> int:
    args = sys.argv[1:]
    show = "--edges" in args
    crates = [a for a in args if a != "--edges"] or DEFAULT
    root = Path(__file__).resolve().parent.parent
    found = sum(check(root / c, show) for c in crates)
    print(f"{found} module cycle(s)")
    return 1 if found else 0


if __name__ == "__main__":
    sys.exit(main())
