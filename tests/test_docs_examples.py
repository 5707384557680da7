"""The Python examples in README.md and docs/ are code: a broken example fails the suite.

Every ```` ```python ```` block (a block quoting another library's API names that library
in its info string, e.g. ```` ```python speechsdk ````, and is not antiphon's to check):

- compiles (top-level ``await`` and ``async with`` allowed, as in a notebook or REPL);
- imports only what exists;
- calls every antiphon class or function it names with arguments its signature accepts
  (names and number), so a renamed or removed parameter breaks the example here first.

The examples that need no provider account also *run*, with dummy keys in the
environment and nothing reaching beyond loopback.
"""

from __future__ import annotations

import ast
import asyncio
import importlib
import inspect
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[1]
FENCE = re.compile(r"^```python[ \t]*\n(.*?)^```", re.S | re.M)
FILES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]

# examples that run here as they are (the rest talk to a provider with a real account)
RUNS = {
    "README.md#3": "a fake server that hangs up mid-audio, and the typed error",
    "docs/llm.md#1": "constructing the LLM clients",
    "docs/server.md#1": "an agent file",
}


@dataclass(frozen=True)
class Example:
    where: str
    code: str

    def __str__(self) -> str:
        return self.where


def examples() -> list[Example]:
    found = []
    for file in FILES:
        text = file.read_text(encoding="utf-8")
        for i, match in enumerate(FENCE.finditer(text), start=1):
            found.append(Example(f"{file.relative_to(ROOT)}#{i}", match.group(1)))
    return found


def test_every_example_that_should_run_exists() -> None:
    assert set(RUNS) <= {e.where for e in examples()}


def _tree(example: Example) -> ast.Module:
    flags = ast.PyCF_ONLY_AST | ast.PyCF_ALLOW_TOP_LEVEL_AWAIT
    tree = compile(example.code, example.where, "exec", flags=flags, dont_inherit=True)
    assert isinstance(tree, ast.Module)
    return tree


def _imports(tree: ast.Module) -> dict[str, Any]:
    """Run the example's imports; the names they bind."""
    names: dict[str, Any] = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                module = importlib.import_module(alias.name)
                names[alias.asname or alias.name.split(".")[0]] = module
        elif isinstance(node, ast.ImportFrom) and node.module:
            module = importlib.import_module(node.module)
            for alias in node.names:
                assert hasattr(module, alias.name), f"{node.module} has no {alias.name}"
                names[alias.asname or alias.name] = getattr(module, alias.name)
    return names


def _resolve(node: ast.expr, names: dict[str, Any]) -> Any:
    if isinstance(node, ast.Name):
        return names.get(node.id)
    if isinstance(node, ast.Attribute):
        owner = _resolve(node.value, names)
        return getattr(owner, node.attr, None) if owner is not None else None
    return None


@pytest.mark.parametrize("example", examples(), ids=str)
def test_example_compiles_imports_and_calls_what_exists(example: Example) -> None:
    tree = _tree(example)
    names = _imports(tree)
    checked = 0
    for node in ast.walk(tree):
        if not isinstance(node, ast.Call):
            continue
        target = _resolve(node.func, names)
        if target is None or not getattr(target, "__module__", "").startswith("antiphon"):
            continue
        if any(isinstance(a, ast.Starred) for a in node.args) or any(
            k.arg is None for k in node.keywords
        ):
            continue
        signature = inspect.signature(target)
        args = [object()] * len(node.args)
        kwargs = {k.arg: object() for k in node.keywords if k.arg is not None}
        try:
            signature.bind(*args, **kwargs)
        except TypeError as exc:
            pytest.fail(f"{example}: {ast.unparse(node)[:80]}: {exc}")
        checked += 1
    if "antiphon" in example.code and any(isinstance(n, ast.Call) for n in ast.walk(tree)):
        assert checked, f"{example}: no antiphon call found to check"


@pytest.mark.parametrize("where", sorted(RUNS))
async def test_example_runs(where: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    for key in ("OPENAI_API_KEY", "GROQ_API_KEY", "XAI_API_KEY", "AZURE_OPENAI_API_KEY"):
        monkeypatch.setenv(key, "dummy-key")
    for key in ("DEEPGRAM_API_KEY", "CARTESIA_API_KEY", "ELEVENLABS_API_KEY"):
        monkeypatch.setenv(key, "dummy-key")
    example = next(e for e in examples() if e.where == where)
    flags = ast.PyCF_ALLOW_TOP_LEVEL_AWAIT
    code = compile(example.code, example.where, "exec", flags=flags, dont_inherit=True)
    namespace: dict[str, Any] = {"__name__": f"example_{where}"}
    result = eval(code, namespace)  # our own documentation's code
    if inspect.iscoroutine(result):
        async with asyncio.timeout(30):
            await result
