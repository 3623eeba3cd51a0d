"""The tools of the ``tool_use`` workflow: a calculator and a Python executor.

Both are OpenAI function tools (``TOOL_SPECS``) and run through :func:`call_tool`, which never
raises: a bad call (unknown tool, missing argument, a failing expression or program) returns
``(False, "error: ...")`` for the model to read, and the episode goes on.

The calculator evaluates + - * / // % ** and parentheses on numbers by walking the parsed
expression (no ``eval``); exponents are capped so ``9**9**9`` cannot hang the process.
"""

from __future__ import annotations

import ast
import operator
from typing import Any

from areal_agent.sandbox import PythonSandbox

TOOL_SPECS = {
    "calculator": {"type": "function", "function": {
        "name": "calculator", "description": "Evaluate an arithmetic expression, e.g. (12 + 7) * 3.",
        "parameters": {"type": "object", "properties": {"expression": {"type": "string"}}, "required": ["expression"]}}},
    "python": {"type": "function", "function": {
        "name": "python", "description": "Run a Python program and return what it prints.",
        "parameters": {"type": "object", "properties": {"code": {"type": "string"}}, "required": ["code"]}}},
}

_OPS = {ast.Add: operator.add, ast.Sub: operator.sub, ast.Mult: operator.mul, ast.Div: operator.truediv,
        ast.FloorDiv: operator.floordiv, ast.Mod: operator.mod, ast.Pow: operator.pow}
MAX_EXPONENT = 1000


def calculate(expression: str) -> int | float:
    """Value of an arithmetic expression; ValueError for anything else."""
    def walk(node):
        if isinstance(node, ast.Expression):
            return walk(node.body)
        if isinstance(node, ast.Constant) and type(node.value) in (int, float):
            return node.value
        if isinstance(node, ast.UnaryOp) and isinstance(node.op, (ast.USub, ast.UAdd)):
            v = walk(node.operand)
            return -v if isinstance(node.op, ast.USub) else v
        if isinstance(node, ast.BinOp) and type(node.op) in _OPS:
            left, right = walk(node.left), walk(node.right)
            if isinstance(node.op, ast.Pow) and abs(right) > MAX_EXPONENT:
                raise ValueError(f"exponent {right} is over {MAX_EXPONENT}")
            return _OPS[type(node.op)](left, right)
        raise ValueError(f"not arithmetic: {ast.dump(node)[:80]}")

    try:
        tree = ast.parse(str(expression).strip(), mode="eval")
    except SyntaxError as exc:
        raise ValueError(f"cannot parse {expression!r}: {exc.msg}") from None
    try:
        value = walk(tree)
    except ZeroDivisionError:
        raise ValueError("division by zero") from None
    return int(value) if isinstance(value, float) and value.is_integer() else value


async def call_tool(name: str, arguments: dict[str, Any], sandbox: PythonSandbox) -> tuple[bool, str]:
    """(ok, text for the model)."""
    try:
        if name == "calculator":
            return True, str(calculate(arguments["expression"]))
        if name == "python":
            result = await sandbox.run(str(arguments["code"]))
            return result.ok, result.as_tool_output()
    except KeyError as exc:
        return False, f"error: {name} needs the argument {exc.args[0]!r}"
    except ValueError as exc:
        return False, f"error: {exc}"
    return False, f"error: unknown tool {name!r} (tools: {sorted(TOOL_SPECS)})"
