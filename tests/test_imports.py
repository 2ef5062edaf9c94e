"""The import graph of src/bertkit has no cycle (function-local imports included: they hide a cycle, they do not
remove it), and the light verbs load neither the trainer nor the server."""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src"
PACKAGE = "bertkit"


def modules() -> dict[str, Path]:
    """Dotted name -> file, for every module of the package (a package is its __init__)."""
    out = {}
    for path in sorted((SRC / PACKAGE).rglob("*.py")):
        parts = list(path.relative_to(SRC).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        out[".".join(parts)] = path
    return out


def _type_checking_only(node: ast.AST) -> bool:
    test = getattr(node, "test", None)
    return isinstance(node, ast.If) and (getattr(test, "id", None) == "TYPE_CHECKING"
                                         or getattr(test, "attr", None) == "TYPE_CHECKING")


def imports_of(name: str, path: Path, known: dict[str, Path]) -> dict[str, int]:
    """The package modules `name` imports, at module level or inside functions, each with the line of its first
    import. `from x import y` is an import of the module x.y when there is one, else of x."""
    is_package = path.name == "__init__.py"
    found: dict[str, int] = {}

    def add(target: str, line: int) -> None:
        if target in known and target != name:
            found.setdefault(target, line)

    def visit(node: ast.AST) -> None:
        if _type_checking_only(node):  # never executed: no edge
            return
        if isinstance(node, ast.Import):
            for alias in node.names:
                add(alias.name, node.lineno)
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # relative: from the package that holds `name`
                base = name.split(".") if is_package else name.split(".")[:-1]
                base = base[: len(base) - (node.level - 1)]
                module = ".".join(base + ([node.module] if node.module else []))
            else:
                module = node.module or ""
            for alias in node.names:
                sub = f"{module}.{alias.name}"
                add(sub if sub in known else module, node.lineno)
        for child in ast.iter_child_nodes(node):
            visit(child)

    visit(ast.parse(path.read_text(encoding="utf-8"), str(path)))
    return found


def import_graph() -> dict[str, dict[str, int]]:
    known = modules()
    return {name: imports_of(name, path, known) for name, path in known.items()}


def find_cycles(graph: dict[str, dict[str, int]]) -> list[list[str]]:
    """One cycle (as a closed path) per strongly connected component with more than one module (Tarjan)."""
    index, low, stack, on_stack, components = {}, {}, [], set(), []
    counter = [0]

    def strong(v: str) -> None:
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on_stack.add(v)
        for w in graph[v]:
            if w not in index:
                strong(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                components.append(set(component))

    sys.setrecursionlimit(max(sys.getrecursionlimit(), 10_000))
    for v in sorted(graph):
        if v not in index:
            strong(v)
    cycles = []
    for component in components:  # a shortest way back to the start, inside the component
        start = min(component)
        paths, seen = {start: [start]}, {start}
        frontier = [start]
        cycle = None
        while frontier and cycle is None:
            nxt = []
            for v in frontier:
                for w in sorted(graph[v]):
                    if w == start:
                        cycle = paths[v] + [start]
                        break
                    if w in component and w not in seen:
                        seen.add(w)
                        paths[w] = paths[v] + [w]
                        nxt.append(w)
                if cycle:
                    break
            frontier = nxt
        cycles.append(cycle)
    return cycles


def describe(cycle: list[str], graph: dict[str, dict[str, int]]) -> str:
    return " -> ".join(f"{a} (line {graph[a][b]})" for a, b in zip(cycle, cycle[1:])) + f" -> {cycle[-1]}"


def test_the_cycle_finder_finds_cycles_and_resolves_submodules(tmp_path):
    """The walker itself: a function-local import and a `from package import module` close a cycle."""
    pkg = tmp_path / "pkg"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "a.py").write_text("from pkg import b\n")
    (pkg / "b.py").write_text("def f():\n    from pkg.c import g\n")
    (pkg / "c.py").write_text("import pkg.a\nfrom typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    import pkg.b\n")
    known = {"pkg": pkg / "__init__.py", **{f"pkg.{m}": pkg / f"{m}.py" for m in "abc"}}
    graph = {n: imports_of(n, p, known) for n, p in known.items()}
    assert graph["pkg.a"] == {"pkg.b": 1} and graph["pkg.b"] == {"pkg.c": 2} and graph["pkg.c"] == {"pkg.a": 1}
    assert find_cycles(graph) == [["pkg.a", "pkg.b", "pkg.c", "pkg.a"]]
    (pkg / "c.py").write_text("import json\n")
    graph = {n: imports_of(n, p, known) for n, p in known.items()}
    assert find_cycles(graph) == []


def test_no_import_cycles():
    graph = import_graph()
    assert len(graph) > 30 and "bertkit.cli" in graph and "bertkit.task_families.qa" in graph
    cycles = find_cycles(graph)
    assert not cycles, "import cycles:\n" + "\n".join(describe(c, graph) for c in cycles)


HEAVY = ("bertkit.train", "bertkit.serve", "fastapi", "uvicorn", "starlette")


def loaded_after(code: str, tmp_path: Path) -> list[str]:
    """The heavy modules loaded in a fresh interpreter after `code`."""
    probe = (f"import sys\n{code}\n"
             f"print('@@' + __import__('json').dumps(sorted(m for m in sys.modules if m.startswith({HEAVY!r}))))\n")
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, cwd=tmp_path, timeout=120)
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout.rsplit("@@", 1)[1])


def test_tokenize_loads_neither_the_trainer_nor_the_server(tmp_path, minilm_dir):
    help_run = ("from bertkit.cli import main\n"
                "try:\n    main(['tokenize', '--help'])\nexcept SystemExit:\n    pass")
    assert loaded_after(help_run, tmp_path) == []
    (tmp_path / "in.txt").write_text("a first line\nand a second\n", encoding="utf-8")
    argv = ["tokenize", "--model", str(minilm_dir), "--input", "in.txt", "--output", "o.jsonl"]
    run = f"from bertkit.cli import main\nassert main({argv!r}) == 0"
    assert loaded_after(run, tmp_path) == []
    assert len((tmp_path / "o.jsonl").read_text().splitlines()) == 2
    # the check can fail: the finetune verb does load the trainer
    finetune_help = "from bertkit.cli import main\ntry:\n    main(['finetune', '--help'])\nexcept SystemExit:\n    pass"
    assert any(m.startswith("bertkit.train") for m in loaded_after(finetune_help, tmp_path))


@pytest.mark.parametrize("module", ["bertkit.task_families", "bertkit.data.tasks"])
def test_the_registries_are_pure_python(module, tmp_path):
    """The task and family registries load without torch (the CLI's choices and `tokenize` read them)."""
    probe = (f"import sys, importlib\nsys.modules['bertkit'] = type(sys)('bertkit')\n"
             f"sys.modules['bertkit'].__path__ = [{str(SRC / PACKAGE)!r}]\nimportlib.import_module({module!r})\n"
             f"print('@@' + str('torch' in sys.modules))")
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, cwd=tmp_path, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.rsplit("@@", 1)[1].strip() == "False"


def test_the_public_api_resolves_and_the_applications_load_on_first_use(tmp_path):
    """Every name in bertkit.__all__ exists; `import bertkit` loads no application (nor scikit-learn) until one of
    `semantic_search`, `paraphrase_mining`, `cluster`, ... is first touched."""
    probe = ("import sys, bertkit\n"
             "before = sorted(m for m in sys.modules if m.startswith(('bertkit.apps', 'sklearn')))\n"
             "missing = [n for n in bertkit.__all__ if not hasattr(bertkit, n)]\n"
             "after = 'bertkit.apps.cluster' in sys.modules and 'bertkit.apps.duplicates' in sys.modules\n"
             "print('@@' + __import__('json').dumps([before, missing, after]))\n")
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, cwd=tmp_path, timeout=120)
    assert out.returncode == 0, out.stderr
    before, missing, after = json.loads(out.stdout.rsplit("@@", 1)[1])
    assert before == [] and missing == [] and after
