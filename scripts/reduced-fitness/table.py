"""Aggregate the grid: per row (method, size) and seed, mean over subset seeds of dev (or test) acc_ja,
problems per run and wall. python table.py r0-grid.log r1-grid.log [r0-test.log r1-test.log]"""
import collections
import json
import sys

logs = [a for a in sys.argv[1:] if "test" not in a]
tests = [a for a in sys.argv[1:] if "test" in a]
test = {}
for f in tests:
    for line in open(f):
        if line.startswith("{"):
            d = json.loads(line)
            test[d["run"]] = d["test_acc_ja"]
rows = collections.defaultdict(lambda: collections.defaultdict(list))
for f in logs:
    seed = int(f.split("/")[-1][1])
    for line in open(f):
        if not line.startswith("{"):
            continue
        d = json.loads(line)
        name = d["name"].split("-")[0]
        key = f"r{seed}/{d['name']}"
        rows[name][seed].append((d["test_acc_ja"], test.get(key), d["problems"], d["wall_s"],
                                 d["problems_per_candidate"]))
print("| row | per cand | seed0 dev | seed1 dev | seed0 test | seed1 test | problems | wall s (seed 0) |")
for name, by_seed in rows.items():
    cells = []
    for col in (0, 1):
        for seed in (0, 1):
            vals = [v[col] for v in by_seed.get(seed, []) if v[col] is not None]
            cells.append(f"{sum(vals)/len(vals):.1f} ({', '.join(f'{v:g}' for v in vals)})" if vals else "-")
    s0 = by_seed.get(0) or by_seed.get(1)
    print(f"| {name} | {s0[0][4]} | {' | '.join(cells)} | {s0[0][2]} | {sum(v[3] for v in s0)/len(s0):.0f} |")
