#!/bin/bash
# The zoo-evolve budget runs of issue 20 (session 12), one after another on a quiet 2-core machine:
# quick, default and --full on the committed zoo (build seed 0) and on a second build (seed 1).
#   evovlm zoo build --seed 1 --out SEED1_ZOO    # about 70 minutes; --only vlm reuses base/ja/math
#   bash scripts/zoo-budgets/run.sh RUNS_DIR SEED1_ZOO
#   python scripts/zoo-budgets/collect.py RUNS_DIR > results/zoo-evolve-budgets.json
set -u
runs=$1; seed1=$2
mkdir -p "$runs" && cd "$runs"
run() {  # NAME ARGS...: evovlm zoo evolve with a wall-clock time in walls.txt
  name=$1; shift
  start=$(date +%s.%N)
  HF_HUB_OFFLINE=1 evovlm zoo evolve --out "$name" --quiet "$@" > "$name.log" 2>&1
  rc=$?
  echo "$name rc=$rc wall=$(python3 -c "print(round($(date +%s.%N) - $start, 1))") args=$*" >> walls.txt
}
run q0 --quick --half text
run d0
run d1 --zoo "$seed1"
run q1 --quick --half text --zoo "$seed1"
run f0 --full
run f1 --full --zoo "$seed1"
