"""The ``evovlm`` command line: ``evovlm merge|evolve|eval|score|zoo|demo``.

Each subcommand lives in its own module exposing ``configure(parser)`` and
``run(args) -> int``; heavy imports happen inside ``run`` so ``--help`` is instant.
User mistakes raise :class:`~evovlm.errors.EvoVLMError`, printed here without a traceback.
"""

from __future__ import annotations

import argparse
import importlib
import sys

from evovlm import __version__
from evovlm.errors import EvoVLMError

# name -> (module, one-line help)
COMMANDS: dict[str, tuple[str, str]] = {
    "merge": ("evovlm.merge.cli", "merge checkpoints from a recipe (own format or mergekit YAML)"),
    "evolve": ("evovlm.evolve.cli", "evolve a merge with CMA-ES: parameter space, data-flow space, or both"),
    "eval": ("evovlm.eval.cli_eval", "generate with a model on a benchmark and score it"),
    "score": ("evovlm.eval.cli_score", "score predictions produced elsewhere (JSONL)"),
    "zoo": ("evovlm.zoo.cli", "build the miniature zoo of tiny trained models"),
    "demo": ("evovlm.app.cli", "start the Gradio demo"),
}


class _Parser(argparse.ArgumentParser):
    """Usage errors read like every other error: one line, ``evovlm SUBCOMMAND: error: ...``."""

    def error(self, message: str) -> None:  # type: ignore[override]
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="evovlm", description="Evolutionary model merging toolkit.")
    parser.add_argument("--version", action="version", version=f"evovlm {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, (module_name, help_text) in COMMANDS.items():
        module = importlib.import_module(module_name)
        sub_parser = sub.add_parser(name, help=help_text, description=help_text)
        module.configure(sub_parser)
        sub_parser.set_defaults(_run=module.run)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # --help, or a usage error argparse has printed: its code, not an exit
        return int(exc.code or 0) if not isinstance(exc.code, str) else 2
    if not getattr(args, "_run", None):
        parser.print_help()
        return 1
    try:
        return int(args._run(args) or 0)
    except EvoVLMError as exc:
        print(f"evovlm {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"evovlm {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
