"""Every command the README shows works as written, on a copy of the repository in a folder of its own.

The commands are read from the README's ``bash`` blocks, so a command that drifts from the code
fails here. A synopsis (``evovlm merge RECIPE.yaml --out DIR [--overwrite]``) is checked against
the subcommand's parser: each option it shows exists. A concrete command is run, offline, from a
copy of the tracked files in a temporary folder (no ``../shared`` beside it, an empty HF cache),
unless it is in ``SLOW`` with the reason and the place where it is run instead.
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
BIN = Path(sys.executable).parent

# Commands too slow for the suite: each is run by hand for a release (output quoted in the closing
# note of the change that touched it) or covered as named.
SLOW = {
    "evovlm zoo evolve --out out/zoo-evolve": "about 7 min per seed; test_zoo_build runs it on a quick zoo",
    "evovlm zoo evolve --full --out out/zoo-evolve-full": "about 19 min per seed; as the line above, with "
    "other budgets",
    "evovlm zoo evolve --out out/zoo-evolve --resume": "after the above; test_zoo_build covers --resume",
    "python benchmarks/merge_bench.py": "writes ~7 GB and takes minutes: a benchmark",
    "python benchmarks/eval_bench.py": "a benchmark (about a minute)",
    "python benchmarks/select_bench.py": "a benchmark (about a minute)",
    "python benchmarks/evolve_bench.py --models zoo:base,zoo:ja,zoo:math --bench zoo-mgsm-ja --split fitness "
    "--limit 100 --max-new-tokens 40 --batch-size 64": "a benchmark (minutes)",
    "scripts/check-versions oldest": "installs a virtual environment from the package index",
    "scripts/check-versions latest --bump": "installs a virtual environment from the package index",
}
# Servers: started, checked for this line, then stopped.
SERVERS = {"python app.py": "Running on local URL", "python app.py --models evovlm/app/models-tiny.yaml":
           "Running on local URL"}
# .ci/run runs these two itself (the blocks after <!-- setup --> and <!-- test -->).
CI_MARKERS = ("<!-- setup -->", "<!-- test -->")
_PLACEHOLDER = re.compile(r"\b[A-Z][A-Z_]{1,}\b(\.yaml|\.json|\.jsonl)?|\[|\||\bN\b")


def readme_commands() -> list[str]:
    """Command lines of the README's bash blocks in order, without comments and CI's own blocks."""
    text = README.read_text(encoding="utf-8")
    commands = []
    for match in re.finditer(r"(?P<before>[^\n]*\n)?```bash\n(?P<body>.*?)```", text, re.S):
        if any(marker in (match.group("before") or "") for marker in CI_MARKERS):
            continue
        for line in match.group("body").splitlines():
            line = re.sub(r"\s+#.*$", "", line).strip()
            if line and not line.startswith("#"):
                commands.append(line)
    return commands


def is_synopsis(command: str) -> bool:
    return bool(_PLACEHOLDER.search(command))


def _parser_options(words: list[str]) -> set[str]:
    """Option strings of the subcommand that ``words`` (``evovlm zoo evolve ...``) invokes."""
    import argparse

    if words[:2] == ["python", "app.py"]:
        from evovlm.app.cli import configure

        parser = argparse.ArgumentParser()
        configure(parser)
    else:
        from evovlm.cli import build_parser

        parser = build_parser()
        for word in words[1:]:
            subparsers = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
            if not subparsers or word not in subparsers[0].choices:
                break
            parser = subparsers[0].choices[word]
    return {option for action in parser._actions for option in action.option_strings}


def test_readme_has_the_commands_this_file_knows():
    commands = readme_commands()
    assert len(commands) >= 20
    for command in [*SLOW, *SERVERS]:
        assert command in commands, f"{command!r} is no longer in the README: update SLOW/SERVERS"


@pytest.mark.parametrize("command", [c for c in readme_commands() if c.startswith(("evovlm", "python app.py"))])
def test_every_option_shown_exists(command):
    options = _parser_options(shlex.split(command.replace("[", " ").replace("]", " ").replace("|", " ")))
    shown = set(re.findall(r"(?<![\w-])--[a-z][a-z0-9-]*", command))
    assert shown <= options, f"{command}: {sorted(shown - options)} not options of this subcommand"


def _copy_of_the_repository(target: Path) -> Path:
    """The tracked files (what a clone holds), else the tree without build outputs."""
    listed = subprocess.run(["git", "ls-files", "-z"], cwd=ROOT, capture_output=True)
    if listed.returncode == 0 and listed.stdout:
        for name in listed.stdout.decode().split("\0"):
            if name and (ROOT / name).is_file():
                (target / name).parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(ROOT / name, target / name)
    else:
        shutil.copytree(ROOT, target, dirs_exist_ok=True, ignore=shutil.ignore_patterns(
            ".git", ".venv", "out", "results", "__pycache__", "*.egg-info", ".pytest_cache"))
    return target


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _environment(clone: Path, home: Path) -> dict[str, str]:
    """Offline, an empty HF cache, the clone's own code first, nothing pointing at other data."""
    env = dict(os.environ, PATH=f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}", PYTHONPATH=str(clone),
               HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", HF_HOME=str(home / "hf"),
               HF_HUB_CACHE=str(home / "hf" / "hub"), GRADIO_ANALYTICS_ENABLED="False",
               GRADIO_SERVER_PORT=str(_free_port()))
    for variable in ("EVOVLM_MGSM_JA", "EVOVLM_JA_VG_VQA", "EVOVLM_JA_VLM_WILD", "EVOVLM_APP_MODELS"):
        env.pop(variable, None)
    return env


def _run_server(command: str, cwd: Path, env: dict[str, str], ready: str) -> str:
    process = subprocess.Popen(command, shell=True, cwd=cwd, env=env, stdout=subprocess.PIPE,
                               stderr=subprocess.STDOUT, text=True, start_new_session=True)
    seen = []
    try:
        deadline = time.time() + 120
        while time.time() < deadline:
            line = process.stdout.readline()
            if not line and process.poll() is not None:
                break
            seen.append(line)
            if ready in line:
                return "".join(seen)
        raise AssertionError(f"{command!r} never printed {ready!r}:\n{''.join(seen)}")
    finally:
        try:
            os.killpg(process.pid, signal.SIGTERM)
        except ProcessLookupError:  # it exited on its own (the failure above says why)
            pass
        process.wait(30)


def test_every_readme_command_runs_on_a_fresh_copy(tmp_path):
    """Each concrete command, in README order (a --resume follows its run), exit 0."""
    clone = _copy_of_the_repository(tmp_path / "any folder" / "evovlm")
    env = _environment(clone, tmp_path)
    ran, failures = [], []
    for command in readme_commands():
        if is_synopsis(command) or command in SLOW:
            continue
        if command in SERVERS:
            _run_server(command, clone, env, SERVERS[command])
            ran.append(command)
            continue
        result = subprocess.run(command, shell=True, cwd=clone, env=env, capture_output=True, text=True,
                                timeout=600)
        ran.append(command)
        if result.returncode != 0:
            failures.append(f"{command}\n  exit {result.returncode}\n{result.stderr[-2000:]}")
    assert not failures, "\n\n".join(failures)
    assert len(ran) >= 15, ran
    # what the commands wrote is where the README says
    assert (clone / "out" / "tiny-dare-ties" / "model.safetensors").is_file()
    assert (clone / "out" / "evolve-ps-tiny" / "summary.json").is_file()
    assert (clone / "out" / "scores.json").is_file()
