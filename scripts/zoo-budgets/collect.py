"""Collect the zoo-evolve budget runs (``run.sh``) into one JSON: walls, table rows, claims.

    python scripts/zoo-budgets/collect.py RUNS_DIR > results/zoo-evolve-budgets.json
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

ROWS = ("evolved PS", "evolved DFS", "evolved PS+DFS", "evolved VLM (PS)",
        "evolved VLM (PS), ROUGE-L-ja fitness alone")


def main(runs: Path) -> dict:
    walls = {}
    for line in (runs / "walls.txt").read_text().splitlines():  # NAME rc=RC wall=SECONDS args=...
        name, rc, wall, args = line.split(" ", 3)
        walls[name] = {"rc": int(rc[3:]), "wall_s": float(wall[5:]), "args": args[5:]}
    collected = {}
    for name, run in walls.items():
        table = json.loads((runs / name / "table.json").read_text(encoding="utf-8"))
        scores = {row["model"]: row.get("acc_ja", row.get("content_ja"))
                  for row in table["rows"] if row["model"] in ROWS}
        collected[name] = {**run, "zoo_seed": json.loads((Path(table["zoo"]) / "build.json").read_text())["seed"],
                           "evolution_wall_s": table["evolution_wall_s"], "test": scores,
                           "claims": {item["criterion"]: item["passed"] for item in table["checks"]}}
    return collected


if __name__ == "__main__":
    print(json.dumps(main(Path(sys.argv[1])), indent=2, ensure_ascii=False))
