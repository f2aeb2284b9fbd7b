"""The import graph keeps the layering: no import circle among wsss, ppl_wsss, gslm and tools, between
modules or between packages (wsss.cam, wsss.pseudo, ...: no arrow runs back up); the
shared layer (wsss) never imports a method package (methods plug in through wsss.registry);
no library package (wsss or a method) imports the tools (benchmarks, the bench); wsss.data
knows no training loop (no wsss.engine). Imports inside functions count too."""
from __future__ import annotations

import ast
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PACKAGES = ("wsss", "ppl_wsss", "gslm", "tools")
METHOD_PACKAGES = ("ppl_wsss", "gslm")


def module_name(rel: Path) -> str:
    parts = list(rel.with_suffix("").parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def read_sources(root: Path = REPO) -> dict[str, tuple[str, bool]]:
    """module -> (source, is a package __init__) for every .py file of the packages."""
    out = {}
    for top in PACKAGES:
        for f in sorted((root / top).rglob("*.py")):
            rel = f.relative_to(root)
            out[module_name(rel)] = (f.read_text(encoding="utf-8"), rel.name == "__init__.py")
    return out


def import_graph(sources: dict[str, tuple[str, bool]]) -> dict[str, set[str]]:
    """module -> the project modules it imports anywhere in its body (relative imports
    resolved; ``from a import b`` counts ``a.b`` when that is a module, else ``a``)."""
    edges: dict[str, set[str]] = {m: set() for m in sources}

    def owner(name: str) -> str | None:
        while name:
            if name in sources:
                return name
            name = name.rpartition(".")[0]
        return None

    for mod, (text, is_pkg) in sources.items():
        package = mod if is_pkg else mod.rpartition(".")[0]
        for node in ast.walk(ast.parse(text)):
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    parts = package.split(".")
                    parts = parts[: len(parts) - node.level + 1]
                    base = ".".join(parts + ([base] if base else []))
                names = [base] + [f"{base}.{a.name}" for a in node.names]
            else:
                continue
            for name in names:
                target = owner(name)
                if target and target != mod:
                    edges[mod].add(target)
    return edges


def cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """The import circles: strongly connected components of more than one module."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []
    counter = 0

    for start in sorted(edges):
        if start in index:
            continue
        work = [(start, iter(sorted(edges[start])))]
        index[start] = low[start] = counter
        counter += 1
        stack.append(start)
        on_stack.add(start)
        while work:
            v, children = work[-1]
            for w in children:
                if w not in index:
                    index[w] = low[w] = counter
                    counter += 1
                    stack.append(w)
                    on_stack.add(w)
                    work.append((w, iter(sorted(edges[w]))))
                    break
                if w in on_stack:
                    low[v] = min(low[v], index[w])
            else:
                work.pop()
                if work:
                    low[work[-1][0]] = min(low[work[-1][0]], low[v])
                if low[v] == index[v]:
                    comp = []
                    while True:
                        w = stack.pop()
                        on_stack.discard(w)
                        comp.append(w)
                        if w == v:
                            break
                    if len(comp) > 1:
                        found.append(sorted(comp))
    return found


def broken_rules(edges: dict[str, set[str]]) -> list[str]:
    out = [f"{a} imports {b}: the shared layer knows no method (register it in wsss.registry)"
           for a in sorted(edges) for b in sorted(edges[a])
           if a.split(".")[0] == "wsss" and b.split(".")[0] in METHOD_PACKAGES]
    out += [f"{a} imports {b}: the library knows no tool" for a in sorted(edges) for b in sorted(edges[a])
            if a.split(".")[0] != "tools" and b.split(".")[0] == "tools"]
    out += [f"{a} imports {b}: data knows no training loop" for a in sorted(edges) for b in sorted(edges[a])
            if (a == "wsss.data" or a.startswith("wsss.data.")) and (b == "wsss.engine" or b.startswith("wsss.engine."))]
    circles = cycles(edges)
    out += ["import circle: " + " <-> ".join(c) for c in circles]
    out += ["package circle: " + " <-> ".join(c) for c in cycles(package_graph(edges)) if c not in circles]
    return out


def unit(module: str) -> str:
    """A module's package below a top package (wsss.cam.make -> wsss.cam); a module directly in
    a top package stands for itself (wsss.stages)."""
    parts = module.split(".")
    return ".".join(parts[:2]) if len(parts) > 2 else module


def package_graph(edges: dict[str, set[str]]) -> dict[str, set[str]]:
    """The import graph between packages (and a top package's own modules): no arrow may run
    back up, e.g. wsss.cam -> wsss.pseudo -> wsss.cam."""
    out: dict[str, set[str]] = {}
    for a, targets in edges.items():
        out.setdefault(unit(a), set())
        for b in targets:
            out.setdefault(unit(b), set())
            if unit(a) != unit(b):
                out[unit(a)].add(unit(b))
    return out


# --------------------------------------------------------------------------
# the checker on a made-up tree: it must see what the real test relies on
# --------------------------------------------------------------------------
def _fake(**modules: str) -> dict[str, tuple[str, bool]]:
    return {name.replace("__", "."): (text, False) for name, text in modules.items()}


def test_checker_finds_circles_forbidden_edges_and_function_level_imports():
    clean = _fake(wsss__a="import wsss.b\n", wsss__b="x = 1\n", gslm__m="from wsss import a\n",
                  wsss__data__d="from wsss.b import x\n", wsss__engine__e="from wsss.data import d\n")
    clean["wsss.data"] = ("", True)
    clean["wsss.engine"] = ("", True)
    assert broken_rules(import_graph(clean)) == []

    circle = dict(clean, **_fake(wsss__b="def f():\n    from wsss.a import g  # in a function\n"))
    assert broken_rules(import_graph(circle)) == ["import circle: wsss.a <-> wsss.b"]

    longer = dict(clean, **_fake(wsss__b="import wsss.c\n", wsss__c="from wsss import a\n"))
    assert broken_rules(import_graph(longer)) == ["import circle: wsss.a <-> wsss.b <-> wsss.c"]

    method = dict(clean, **_fake(gslm__n="x = 2\n", wsss__b="def f():\n    import gslm.n\n"))
    assert broken_rules(import_graph(method)) == ["wsss.b imports gslm.n: the shared layer knows no method "
                                                  "(register it in wsss.registry)"]

    tool = dict(clean, **_fake(tools__t="import wsss.a\n", gslm__m="def f():\n    from tools.t import z\n"))
    assert broken_rules(import_graph(tool)) == ["gslm.m imports tools.t: the library knows no tool"]

    data = dict(clean, **_fake(wsss__data__d="from ..engine.f import y\n", wsss__engine__f="y = 0\n"))  # relative
    assert broken_rules(import_graph(data)) == ["wsss.data.d imports wsss.engine.f: data knows no training loop",
                                                "package circle: wsss.data <-> wsss.engine"]  # engine.e imports data.d

    # no module circle, but the packages import each other: wsss.cam.x -> wsss.pseudo.y -> wsss.cam.z
    up = dict(clean, **_fake(wsss__cam__x="import wsss.pseudo.y\n", wsss__pseudo__y="from wsss.cam.z import q\n",
                             wsss__cam__z="q = 0\n"))
    up["wsss.cam"], up["wsss.pseudo"] = ("", True), ("", True)
    assert broken_rules(import_graph(up)) == ["package circle: wsss.cam <-> wsss.pseudo"]


def test_checker_reads_the_real_tree():
    edges = import_graph(read_sources())
    assert {"wsss.config", "wsss.registry", "wsss.engine.trainer", "ppl_wsss.method", "gslm.slm"} <= set(edges)
    assert "wsss.registry" in edges["wsss.config.load"]
    assert "wsss.models.cam_net" in edges["ppl_wsss.method"]
    assert "wsss.registry" in edges["tools.benchmark"]


def test_import_graph_has_no_circle_and_no_forbidden_edge():
    assert broken_rules(import_graph(read_sources())) == []


def test_loading_a_config_imports_no_torch():
    """Config sections are plain dataclasses registered by light modules; models load on use."""
    import os
    import subprocess
    import sys

    code = ("import sys; from wsss.config import load_config; "
            "cfg = load_config('configs/gslm/ppl_gslm_r18_synthetic.yaml'); "
            "assert cfg.ppl.stages and cfg.gslm.rounds == 2 and cfg.seg.arch; print('torch' in sys.modules)")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, env=env, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_every_import_of_a_project_name_resolves():
    """An import of one of our modules, at any depth (the tools and the stage bodies import
    lazily, inside functions), names something that exists: a rename that forgets a caller
    fails here, not when a user runs the tool."""
    import importlib

    repo = Path(__file__).resolve().parents[1]
    ours = ("wsss", "gslm", "ppl_wsss", "tools")
    files = [p for d in ("wsss", "gslm", "ppl_wsss") for p in (repo / d).rglob("*.py")]
    files += [p for d in ("tools", "scripts", "tests") for p in (repo / d).glob("*.py")]
    missing = []
    for path in files:
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.level == 0 and (node.module or "").split(".")[0] in ours:
                module = importlib.import_module(node.module)
                for alias in node.names:
                    if alias.name != "*" and not hasattr(module, alias.name):
                        try:
                            importlib.import_module(f"{node.module}.{alias.name}")
                        except ModuleNotFoundError:
                            missing.append(f"{path.relative_to(repo)}:{node.lineno}: {node.module}.{alias.name}")
            elif isinstance(node, ast.Import):
                for alias in node.names:
                    if alias.name.split(".")[0] in ours:
                        importlib.import_module(alias.name)
    assert not missing, missing
