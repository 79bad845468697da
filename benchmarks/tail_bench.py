"""The idle tail of a generation: actors' utilisation when a generation is handed out whole candidates
at a time, against candidate x shard pieces (issue 17's design), in a simulation.

    python benchmarks/tail_bench.py [--actors 8] [--spread 3] [--population 16] [--shards 8] [--seeds 20]

CMA-ES needs every candidate's fitness before it asks for the next generation, so a generation ends
when its last piece of work ends. Actors differ in speed (a slower GPU, a busier node): here each
actor's time per problem is drawn uniformly between 1 and ``--spread`` (3x). Work goes to whichever
actor is free (as Ray's ActorPool does): either one whole candidate (all of its fitness problems) at
a time, or one shard of a candidate's problems at a time (``--shards`` pieces per candidate). Each
piece also pays a fixed cost (the merge into the actor's live model), so finer pieces cost more in
all. Utilisation = busy actor-time / (actors x generation wall time), averaged over ``--seeds``
draws of actor speeds. No Ray and no models: the point is the scheduling arithmetic.
"""

from __future__ import annotations

import argparse
import heapq
import random
import statistics


def generation_time(speeds: list[float], pieces: list[float], merge_s: float) -> tuple[float, float]:
    """(wall time, busy actor-time) of one generation: each piece (its problems' count) goes to the first free
    actor, in order; an actor spends ``merge_s + problems * speed`` on it."""
    free = [(0.0, index) for index in range(len(speeds))]
    heapq.heapify(free)
    busy, end = 0.0, 0.0
    for problems in pieces:
        start, actor = heapq.heappop(free)
        took = merge_s + problems * speeds[actor]
        busy += took
        end = max(end, start + took)
        heapq.heappush(free, (start + took, actor))
    return end, busy


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--actors", type=int, default=8)
    parser.add_argument("--spread", type=float, default=3.0, help="slowest actor / fastest actor")
    parser.add_argument("--population", type=int, default=16, help="candidates per generation")
    parser.add_argument("--problems", type=int, default=1069, help="fitness problems per candidate (the paper's)")
    parser.add_argument("--shards", type=int, default=8)
    parser.add_argument("--merge", type=float, default=20.0, help="a merge's cost, in problems' time")
    parser.add_argument("--seeds", type=int, default=20)
    args = parser.parse_args()
    print(f"{args.actors} actors, speeds drawn in [1, {args.spread:g}] per problem, population {args.population}, "
          f"{args.problems} problems per candidate, a merge costs {args.merge:g} problems' time, "
          f"{args.seeds} draws of speeds")
    print("| pieces per candidate | pieces | utilisation (mean) | worst draw | generation wall (mean) |")
    print("|---|---|---|---|---|")
    for shards in sorted({1, 2, 4, args.shards}):
        utilisation, walls = [], []
        for seed in range(args.seeds):
            rng = random.Random(seed)
            speeds = [rng.uniform(1.0, args.spread) for _ in range(args.actors)]
            size, extra = divmod(args.problems, shards)
            pieces = [size + (1 if k < extra else 0) for _ in range(args.population) for k in range(shards)]
            wall, busy = generation_time(speeds, pieces, args.merge)
            utilisation.append(busy / (args.actors * wall))
            walls.append(wall)
        label = "1 (whole candidates)" if shards == 1 else str(shards)
        print(f"| {label} | {args.population * shards} | {100 * statistics.mean(utilisation):.1f}% | "
              f"{100 * min(utilisation):.1f}% | {statistics.mean(walls):,.0f} |")


if __name__ == "__main__":
    main()
