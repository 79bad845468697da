"""The acceptance table's text and kanji rows of a zoo that has no VLM (run 64: seed 1's rebuild).

`evovlm zoo report` needs the VLM; this scores the rest of its rows with the same functions: JA and
MATH on their own tasks, the zoo-mgsm-ja sources, uniform merges and oracle, and the zoo-mgsm-ja-kanji
rows (sources, the oracle, the oracle plus the reader's task vector, the DFS oracle). Test split.

    python acceptance_text.py ZOO OUT.json
"""

import json
import sys
import tempfile
from pathlib import Path

from evovlm.zoo.report import TableScorer, score_kanji_baselines, score_sources_and_baselines, zoo_refs, zoo_shape

zoo, out = Path(sys.argv[1]).resolve(), Path(sys.argv[2])
with tempfile.TemporaryDirectory() as scratch:
    table = TableScorer(scratch, progress=False, log=print)
    table.score("ja", zoo / "ja", "zoo-ja-qa", ("content_ja",))
    table.score("math", zoo / "math", "zoo-math-en", ("acc",))
    score_sources_and_baselines(table, zoo, own_tasks=False, text=True, vlm=False)
    score_kanji_baselines(table, zoo, zoo_refs(zoo), *zoo_shape(zoo))
out.write_text(json.dumps({"zoo": str(zoo), "split": table.split, "rows": table.rows}, indent=2, ensure_ascii=False)
               + "\n", encoding="utf-8")
