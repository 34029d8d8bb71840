"""The code stays readable (design.md#conventions): no module under ``jmf/`` over 400 lines, no function over 60."""

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "jmf"


def test_no_module_over_400_lines_and_no_function_over_60():
    too_long = []
    for path in sorted(PACKAGE.rglob("*.py")):
        source = path.read_text()
        if len(source.splitlines()) > 400:
            too_long.append(f"{path.relative_to(PACKAGE.parent)}: {len(source.splitlines())} lines")
        for node in ast.walk(ast.parse(source)):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and node.end_lineno - node.lineno >= 60:
                too_long.append(f"{path.relative_to(PACKAGE.parent)}::{node.name}: "
                                f"{node.end_lineno - node.lineno + 1} lines")
    assert not too_long, too_long


def test_run_has_no_per_model_branch():
    """``jmf/run.py`` calls every model through the contract: no model names, no probing."""
    source = (PACKAGE / "run.py").read_text()
    for probe in ("inspect.signature", "except AttributeError", "isinstance(model, JMF", "model_name =="):
        assert probe not in source, probe


def _module_of(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def import_graph() -> dict[str, set[str]]:
    """``module -> modules of jmf it imports``: every import statement, at module level, inside functions and
    under ``TYPE_CHECKING`` alike (a circle hidden in a function-level import is still a circle)."""
    modules = {_module_of(p): p for p in PACKAGE.rglob("*.py")}
    graph: dict[str, set[str]] = {m: set() for m in modules}
    for module, path in modules.items():
        package = module.split(".") if path.name == "__init__.py" else module.split(".")[:-1]
        for node in ast.walk(ast.parse(path.read_text())):
            targets = []
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    base = ".".join(package[:len(package) - node.level + 1] + ([node.module] if node.module else []))
                targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in modules else base for a in node.names]
            for target in targets:
                while target and target not in modules:      # jmf.x.name -> the module jmf.x
                    target = target.rpartition(".")[0]
                if target and target != module:
                    graph[module].add(target)
    return graph


def import_circles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    circles = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in sorted(graph[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                circles.append(sorted(comp))
    for v in sorted(graph):
        if v not in index:
            visit(v)
    return circles


def test_imports_only_go_down():
    """No import circle anywhere in ``jmf/``, function-level and ``TYPE_CHECKING`` imports included."""
    graph = import_graph()
    assert "jmf.train.engine" in graph["jmf.models.base"] and "jmf.pipeline" in graph["jmf.run"]   # it parses
    assert import_circles(graph) == []


def test_the_circle_check_finds_a_circle():
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert import_circles(graph) == [["a", "b", "c"]]


def test_the_code_cites_no_document_outside_the_repository():
    """Design notes live in docs/pages/design.md; no tag points at a document the repository does not have."""
    import re

    pattern = re.compile(r"STYLE R[0-9]|STYLE §|DESIGN [0-9]|DESIGN §")
    roots = [PACKAGE, PACKAGE.parent / "docs", PACKAGE.parent / "conf", PACKAGE.parent / "tests"]
    found = [f"{p.relative_to(PACKAGE.parent)}:{i + 1}" for root in roots for p in root.rglob("*")
             if p.suffix in (".py", ".md", ".yaml") and p.name != "test_layout.py"
             for i, line in enumerate(p.read_text().splitlines()) if pattern.search(line)]
    assert not found, found
    anchors = {"the-behaviour-matrix", "the-joint-model", "the-cf-side", "the-dl-side", "the-mapping-head",
               "the-objective", "data-flow", "model-families", "splits-and-protocols", "conventions", "names"}
    design = (PACKAGE.parent / "docs" / "pages" / "design.md").read_text()
    headings = {re.sub(r"[^a-z0-9 -]", "", h.lower()).strip().replace(" ", "-")
                for h in re.findall(r"^#+ (.+)$", design, re.M)}
    cited = {m for p in PACKAGE.rglob("*.py") for m in re.findall(r"design\.md#([a-z-]+)", p.read_text())}
    assert cited <= anchors <= headings, (cited - anchors, anchors - headings)
