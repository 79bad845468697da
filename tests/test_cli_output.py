"""What the command line prints: options named in errors exist, progress bars in logs, help."""

from __future__ import annotations

import argparse
import ast
import io
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from evovlm.cli import build_parser
from evovlm.errors import EvoVLMError, option, option_style
from evovlm.progress import progress_bar

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "evovlm"
FLAG = re.compile(r"(?<![\w-])--[a-z][a-z0-9-]*")
# Modules whose error messages spell command-line options literally, and the subcommands that
# reach those messages: each option must exist in each of them. Every other module names
# options through errors.option(), which each front end spells its own way.
FLAG_OWNERS = {
    "evovlm/eval/cli_eval.py": ["eval"], "evovlm/eval/cli_score.py": ["score"], "evovlm/eval/evaluate.py": ["eval"],
    "evovlm/evolve/cli.py": ["evolve"], "evovlm/evolve/runs.py": ["evolve"], "evovlm/evolve/search.py": ["evolve"],
    "evovlm/evolve/backends.py": ["evolve"], "evovlm/merge/cli.py": ["merge"], "evovlm/io/writer.py": ["merge"],
"evovlm/zoo/build.py": ["zoo build"], "evovlm/zoo/evolution.py": ["zoo evolve"],
    # one module, several subcommands: by the function that raises
    "evovlm/zoo/cli.py": {"_build": ["zoo build"], "_evolve": ["zoo evolve"], "_report": ["zoo report"]},
}
FOREIGN_FLAGS = {"--repo-type"}  # quoted commands of other tools (`hf download ... --repo-type dataset`)


def _error_flags(path: Path) -> list[tuple[int, str, str]]:
    """(line, enclosing function, --flag) for every option spelled in a string inside a ``...Error(...)`` call."""
    found = []

    def visit(node: ast.AST, function: str) -> None:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and function == "":
            function = node.name
        name = getattr(node, "func", None)
        name = getattr(name, "id", getattr(name, "attr", "")) if name is not None else ""
        if isinstance(node, ast.Call) and name.endswith("Error"):
            for sub in ast.walk(node):
                if isinstance(sub, ast.Constant) and isinstance(sub.value, str):
                    found.extend((node.lineno, function, flag) for flag in FLAG.findall(sub.value)
                                 if flag not in FOREIGN_FLAGS)
        for child in ast.iter_child_nodes(node):
            visit(child, function)

    visit(ast.parse(path.read_text(encoding="utf-8")), "")
    return found


def _options(command: str) -> set[str]:
    parser = build_parser()
    for word in command.split():
        action = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
        parser = action.choices[word]
    return {flag for action in parser._actions for flag in action.option_strings}


def test_errors_suggest_only_options_of_the_subcommand_that_prints_them():
    problems = []
    for path in sorted(PACKAGE.rglob("*.py")):
        relative = path.relative_to(ROOT).as_posix()
        for line, function, flag in _error_flags(path):
            owners = FLAG_OWNERS.get(relative)
            if isinstance(owners, dict):
                owners = owners.get(function)
            if owners is None:
                problems.append(f"{relative}:{line}: {flag} spelled literally; use errors.option()")
                continue
            problems += [f"{relative}:{line}: {flag} is not an option of `evovlm {command}`"
                         for command in owners if flag not in _options(command)]
    assert not problems, "\n".join(problems)


def test_option_names_follow_the_front_end():
    assert option("data_seed") == "--data-seed"
    with option_style(lambda key: f"fitness.{key}"):
        assert option("data_seed") == "fitness.data_seed"
    assert option("limit") == "--limit"


def test_an_evolve_config_error_names_the_config_key_not_a_flag(tmp_path):
    from evovlm.evolve.config import config_from_dict
    from evovlm.evolve.evaluators import load_fitness_benchmark

    config = config_from_dict({"mode": "ps", "ps": {"method": "linear", "models": ["zoo:ja", "zoo:math"]},
                               "fitness": {"benchmark": "mgsm-ja", "data_seed": 3}})
    with pytest.raises(EvoVLMError) as raised:
        load_fitness_benchmark(config.fitness)
    assert "fitness.data_seed" in str(raised.value) and "--" not in str(raised.value)
    with pytest.raises(EvoVLMError, match="--data-seed"):  # the same check from `evovlm eval`
        from evovlm.eval.benchmarks import load_benchmark

        load_benchmark("mgsm-ja", data_seed=3)


class _Pipe(io.StringIO):
    def isatty(self) -> bool:
        return False


def test_progress_bars_write_whole_lines_to_a_file_or_pipe():
    log = _Pipe()
    outer = progress_bar(total=3, desc="generations", file=log, position=0)
    for _ in range(3):
        inner = progress_bar(range(200), desc="generation", file=log, leave=False, position=1)
        for _ in inner:
            pass
        inner.close()
        outer.update(1)
    outer.close()
    text = log.getvalue()
    assert "\r" not in text and "\x1b" not in text
    lines = text.splitlines()
    assert lines and all(line.strip() for line in lines)
    assert len(lines) <= 8  # the first draw of each bar and the last of the kept one, not one per step
    assert lines[-1].startswith("generations: 100%") and "3/3" in lines[-1]


def test_a_merge_logged_to_a_pipe_has_no_carriage_returns(tmp_path):
    tiny = ROOT / "examples" / "tiny"
    recipe = tmp_path / "r.yaml"
    recipe.write_text(f"method: linear\nmodels:\n  - model: {tiny / 'ja'}\n  - model: {tiny / 'math'}\n",
                      encoding="utf-8")
    result = subprocess.run([sys.executable, "-m", "evovlm.cli", "merge", str(recipe), "--out", str(tmp_path / "out")],
                            capture_output=True, text=True, env=dict(os.environ, PYTHONPATH=str(ROOT)), timeout=300)
    assert result.returncode == 0, result.stderr
    assert "merging" in result.stderr and "\r" not in result.stderr and "\x1b" not in result.stderr


def test_tiny_module_help_prints_help_and_writes_nothing(tmp_path):
    result = subprocess.run([sys.executable, "-m", "evovlm.tiny", "--help"], cwd=tmp_path, capture_output=True,
                            text=True, env=dict(os.environ, PYTHONPATH=str(ROOT)), timeout=120)
    assert result.returncode == 0 and "usage: python -m evovlm.tiny" in result.stdout and "OUT_DIR" in result.stdout
    assert list(tmp_path.iterdir()) == []
