"""Plan: the whole tuned study's expected wall time on 1, 2, 4 and 8 cards, from measured per-job GPU times.

Reads a per-model timings table as `benchmarks/study_timings.py` prints it (default: the
H100 run's, benchmarks/measured/h100-2026-11-24/timings.md) and schedules the study's
GPU jobs as the GPU profile runs them: every card holds up to `--slots` jobs (the config's
`gpu_slots`), each job takes the seconds it took on a card shared that way, a model's
training starts after its tuning, and a free slot takes the job that starts the longest
remaining chain. A model whose tuning was not measured (it ran with the paper's lr) gets
k x its training seconds per epoch, k the measured ratio of the tuned models (the range
of k gives the range of the estimate). Evaluation and the CPU jobs take seconds and are
left out.

    python benchmarks/cards.py
    python benchmarks/cards.py --timings path/to/timings.md --slots 3 --cards 1 2 4 8
"""
from __future__ import annotations

import argparse
import heapq
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TIMINGS = ROOT / "benchmarks/measured/h100-2026-11-24/timings.md"


def read_table(path: Path) -> list[dict]:
    """The rows of a Markdown pipe table, by column name."""
    lines = [line.strip().strip("|") for line in path.read_text().splitlines() if line.startswith("|")]
    names = [c.strip() for c in lines[0].split("|")]
    return [dict(zip(names, (c.strip() for c in line.split("|")))) for line in lines[2:]]


def jobs(rows: list[dict], k: float) -> dict[str, tuple[float, float]]:
    """model -> (tune seconds, train seconds); an unmeasured tune is k x one training epoch."""
    return {r["model"]: (float(r["tune_s"]) or k * float(r["train_s"]) / int(r["epochs"]), float(r["train_s"]))
            for r in rows}


def wall_time(chains: dict[str, tuple[float, float]], slots: int) -> float:
    """List scheduling of tune -> train chains on `slots` slots: a free slot takes the ready job that starts the
    longest remaining chain (a training job is ready when its tuning ended)."""
    ready = [(-(tune + train), 0.0, model, "tune") for model, (tune, train) in chains.items()]
    heapq.heapify(ready)
    free = [0.0] * slots          # when each slot is next free
    waiting: list[tuple[float, str]] = []  # (time its tuning ends, model)
    end = 0.0
    while ready or waiting:
        now = min(free)
        for t, model in [w for w in waiting if w[0] <= now]:
            waiting.remove((t, model))
            heapq.heappush(ready, (-chains[model][1], t, model, "train"))
        if not ready:  # nothing to start until a tuning ends
            free[free.index(now)] = min(t for t, _ in waiting)
            continue
        _, available, model, step = heapq.heappop(ready)
        slot = free.index(now)
        start = max(now, available)
        finish = start + chains[model][0 if step == "tune" else 1]
        free[slot] = finish
        end = max(end, finish)
        if step == "tune":
            waiting.append((finish, model))
    return end


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--timings", type=Path, default=TIMINGS, help="study_timings.py's table of a GPU run")
    p.add_argument("--slots", type=int, default=3, help="GPU jobs per card (the config's gpu_slots)")
    p.add_argument("--cards", type=int, nargs="+", default=[1, 2, 4, 8])
    args = p.parse_args()
    rows = read_table(args.timings)
    tuned = [float(r["tune_s"]) / (float(r["train_s"]) / int(r["epochs"])) for r in rows if float(r["tune_s"])]
    if not tuned:
        raise SystemExit(f"{args.timings}: no model was tuned there, so a tune's length cannot be estimated")
    low, high = min(tuned), max(tuned)
    chains = {k: jobs(rows, k) for k in (low, high)}
    longest = {k: max(tune + train for tune, train in c.values()) for k, c in chains.items()}
    source = args.timings.relative_to(ROOT) if args.timings.is_relative_to(ROOT) else args.timings
    total = {k: sum(map(sum, c.values())) for k, c in chains.items()}
    print(f"{len(rows)} models from {source}; unmeasured tunes at {low:.1f} to {high:.1f} training epochs; "
          f"{args.slots} jobs per card")
    print(f"  GPU-job seconds {total[low]:,.0f} to {total[high]:,.0f}; the longest chain (tune, then train) "
          f"{longest[low] / 60:.1f} to {longest[high] / 60:.1f} min")
    one = wall_time(chains[low], args.slots)
    for cards in args.cards:
        lo, hi = (wall_time(chains[k], cards * args.slots) for k in (low, high))
        print(f"  {cards} card(s): {lo / 60:5.1f} to {hi / 60:5.1f} min   {one / lo:4.2f}x one card")


if __name__ == "__main__":
    main()
