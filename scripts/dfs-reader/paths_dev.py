"""Run 62 (issue 18): dev acc_ja on zoo-mgsm-ja-kanji and zoo-mgsm-ja of hand-written paths over a model (A) and the
zoo's reader (R), e.g. the DFS oracle "A0 R1-3 A1-5" (6 blocks each).

    python paths_dev.py ZOO MODEL "A0 R1-3 A1-5" "A0-5" ...
"""
import sys
import tempfile
from pathlib import Path

import evovlm.zoo  # noqa: F401  (registers the zoo benchmarks)
from evovlm.zoo.paths import save_dfs_path
from evovlm.zoo.report import TARGET_KEYS, TableScorer


def parse(name: str, layers: int = 6) -> list[int]:
    path = []
    for part in name.split():
        first, _, last = part[1:].partition("-")
        path += [(0 if part[0] == "A" else layers) + i for i in range(int(first), int(last or first) + 1)]
    return path


def main() -> None:
    zoo, model = Path(sys.argv[1]), Path(sys.argv[2])
    with tempfile.TemporaryDirectory() as scratch:
        table = TableScorer(scratch, split="dev", progress=False, log=lambda _: None)
        for number, name in enumerate(sys.argv[3:]):
            saved = save_dfs_path(model, zoo / "reader", parse(name), Path(scratch) / f"path-{number}")
            kanji = table.score(name, saved, "zoo-mgsm-ja-kanji", TARGET_KEYS)["acc_ja"]
            digits = table.score(f"{name} (digits)", saved, "zoo-mgsm-ja", TARGET_KEYS)["acc_ja"]
            print(f"{name}: kanji {kanji}, digits {digits}", flush=True)


if __name__ == "__main__":
    main()
