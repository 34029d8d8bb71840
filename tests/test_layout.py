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
