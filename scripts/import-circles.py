#!/usr/bin/env python3
"""Finds import circles in src/: between top-level modules, and between the
files of one module. A file's edges are the crate paths it names
(`crate::a::b`, `super::x`, `self::x`), resolved to the file that defines
the longest matching module; a `mod x;` declaration is not an edge.
Exits 1 and prints each circle when there is one."""
import os, re, sys

root = sys.argv[1] if len(sys.argv) > 1 else "src"
files = {}  # module path tuple -> file
for d, _, fs in os.walk(root):
    for f in fs:
        if not f.endswith(".rs"):
            continue
        p = os.path.relpath(os.path.join(d, f), root)
        parts = p[:-3].split(os.sep)
        if parts[-1] == "mod" or parts == ["lib"] or parts == ["main"]:
            parts = parts[:-1]
        files[tuple(parts)] = p

def strip(src):
    src = re.sub(r"//[^\n]*", "", src)
    src = re.sub(r'"(\\.|[^"\\])*"', '""', src)
    # unit tests may name anything: they are not part of the import graph
    src = re.sub(r"pub\s*\((crate|super|self|in [^)]*)\)", "pub", src)  # visibility
    i = src.find("#[cfg(test)]")
    return src if i < 0 else src[:i]

def resolve(path):
    for n in range(len(path), -1, -1):
        if tuple(path[:n]) in files:
            return tuple(path[:n])

edges = {m: set() for m in files}
for mod, p in files.items():
    if p == "main.rs":
        continue
    src = strip(open(os.path.join(root, p)).read())
    # `use a::{b, c::d}` groups: expand one level
    for m in re.finditer(r"\b(crate|super|self)((?:::\w+)*)(::\{([^}]*)\})?", src):
        head, rest = m.group(1), [x for x in m.group(2).split("::") if x]
        base = {"crate": [], "super": list(mod[:-1]), "self": list(mod)}[head]
        # `super` in a file module x.rs/x/mod.rs: parent of this module
        while rest and rest[0] == "super":
            base, rest = base[:-1], rest[1:]
        tails = [[]]
        if m.group(4):
            tails = [[y for y in t.strip().split("::") if y and y != "self"] for t in m.group(4).split(",") if t.strip()]
        for t in tails:
            tgt = resolve(base + rest + t)
            if tgt is not None and tgt != mod:
                edges[mod].add(tgt)
    # a child module named without `self::` (`memory::MemoryStore`)
    for child in {m[len(mod)] for m in files if len(m) > len(mod) and m[:len(mod)] == mod}:
        for m in re.finditer(r"(?<![:\w])" + child + r"((?:::\w+)+)", src):
            if re.match(r"\s*;", src[m.end():]) and re.search(r"\bmod\s*$", src[:m.start()]):
                continue  # `mod child;`
            tgt = resolve(list(mod) + [child] + [x for x in m.group(1).split("::") if x])
            if tgt is not None and tgt != mod:
                edges[mod].add(tgt)

def sccs(nodes, succ):
    index, low, on, st, out, i = {}, {}, set(), [], [], [0]
    sys.setrecursionlimit(10000)
    def go(v):
        index[v] = low[v] = i[0]; i[0] += 1; st.append(v); on.add(v)
        for w in succ(v):
            if w not in index:
                go(w); low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            c = []
            while True:
                w = st.pop(); on.discard(w); c.append(w)
                if w == v: break
            if len(c) > 1: out.append(c)
    for v in nodes:
        if v not in index: go(v)
    return out

bad = 0
top = lambda m: m[:1]
tops = {top(m) for m in files if m}
for c in sccs(sorted(tops), lambda v: sorted({top(w) for m in files if top(m) == v for w in edges[m] if w and top(w) != v})):
    bad += 1; print("modules:", " <-> ".join("::".join(x) for x in c))
# inside one module: the files under one directory, at every level
dirs = {m[:n] for m in files for n in range(len(m))}
for d in sorted(dirs):
    inside = [m for m in files if m[:len(d)] == d and len(m) > len(d)]
    group = lambda m: m[:len(d) + 1]
    members = sorted({group(m) for m in inside} | ({d} if d in files else set()))
    def succ(v):
        src_files = [m for m in files if (m == v if v == d else m[:len(v)] == v)]
        return sorted({(w if w == d else group(w)) for m in src_files for w in edges[m]
                       if (w == d or (w[:len(d)] == d and len(w) > len(d))) and (w if w == d else group(w)) != v})
    for c in sccs(members, succ):
        bad += 1; print("files in", "::".join(d) or "crate", ":", " <-> ".join(files.get(x, "::".join(x)) for x in c))
sys.exit(1 if bad else 0)
