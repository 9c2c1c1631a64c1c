"""Part ``ceiling`` of ``benchmarks/learned_pruning.py`` (diagnostic).

Is there an architecture a channel-width search could find that beats
uniform width by the issue's margin at this scale? Random candidates in
MetaPruning's MACs band (the search's own draw, ``[--meta-lower * target,
target]``) and the largest uniform one under the target are each retrained
from scratch (the meta part's recipe) on ``--ceiling-seeds`` seeds; the
``--ceiling-top`` best by mean and uniform are then retrained on
``--ceiling-fresh`` new seeds (100, 101, ...), so the winners are scored
on seeds that did not choose them (picking the best of many noisy means
is biased upwards). The fresh-seed gap best - uniform bounds what any
search over these widths (MetaPruning, AutoSlim, AMC) can gain with this
retraining recipe; no PruningNet is trained.
"""

from __future__ import annotations

import time

import _common as bc
import numpy as np

FRESH_SEED = 100


def band_candidates(net, macs, target, a, count, seed):
    """``(oracle, {name: genes})``: ``count`` random candidates in
    MetaPruning's MACs band ``[--meta-lower * target, target]`` (the
    search's own draw) and ``"uniform"``, the largest uniform scale under
    the target (parts ``rank`` and ``ceiling``)."""
    from tfcomp.pruning.metapruning import PAPER_SCALES
    from tfcomp.tuners.metapruning import MetaPruningOracle

    oracle = MetaPruningOracle(net.sizes, macs, target * macs.dense,
                               lower=a.meta_lower, seed=seed)
    n = len(oracle.groups)
    cands = {f"random{i}": g for i, g in enumerate(oracle._random(count))}
    cands["uniform"] = [max(i for i in range(len(PAPER_SCALES))
                            if oracle.cost_of([i] * n) <= oracle.budget)] * n
    return oracle, cands


def ceiling_part(a, data, out, result, tools):
    """Runs the diagnostic for each model and target; ``tools``: the
    parent script's ``dense``, ``scratch``, ``write`` helpers."""
    from tfcomp.pruning import prune_channels
    from tfcomp.pruning.metapruning import PruningNet
    from tfcomp.pruning.targets import ChannelMacs

    (x, y), (xt, yt), _ = data
    for name in a.models.split(","):
        model = tools["dense"](name, a, x, y, result, xt, yt)
        net = PruningNet(model, seed=a.first_seed)  # sizes / plans only
        macs = ChannelMacs(net.graph)
        for target in [float(t) for t in a.targets.split(",")]:
            t0 = time.time()
            oracle, cands = band_candidates(net, macs, target, a,
                                            a.ceiling_candidates,
                                            a.first_seed)

            def train(key, seed, model=model, net=net, oracle=oracle,
                      cands=cands, label=f"{name} {target}"):
                widths = oracle.widths(cands[key])
                small = tools["scratch"](prune_channels(
                    model, net.plan(widths)), a, x, y, seed)
                acc = bc.accuracy(small, xt, yt)
                bc.log(f"ceiling {label} {key} seed {seed}: {acc:.4f}")
                return acc

            seeds = range(a.first_seed, a.first_seed + a.ceiling_seeds)
            rows = {k: {"macs": macs(oracle.widths(g)) / macs.dense,
                        "first": [train(k, s) for s in seeds]}
                    for k, g in cands.items()}
            ranked = sorted((k for k in rows if k != "uniform"),
                            key=lambda k: -np.mean(rows[k]["first"]))
            fresh = range(FRESH_SEED, FRESH_SEED + a.ceiling_fresh)
            for k in ranked[:a.ceiling_top] + ["uniform"]:
                rows[k]["fresh"] = [train(k, s) for s in fresh]
            entry = {"model": name, "target": target, "rows": rows,
                     "secs": time.time() - t0}
            result.setdefault("ceiling", [])
            result["ceiling"] = [r for r in result["ceiling"] if (
                r["model"], r["target"]) != (name, target)] + [entry]
            tools["write"](out, result)


def ceiling_markdown(result) -> list:
    """The part's tables (lines; empty without the part)."""
    lines = []
    for r in result.get("ceiling", []):
        rows = r["rows"]
        uni = rows["uniform"]
        lines += ["", f"Ceiling check ({r['model']}, target {r['target']}, "
                  f"{r['secs']:.0f} s): {len(rows) - 1} random candidates in "
                  "MetaPruning's MACs band and uniform width, each retrained "
                  f"from scratch on {len(uni['first'])} seeds; the best "
                  f"{sum('fresh' in v for v in rows.values()) - 1} and "
                  f"uniform again on {len(uni.get('fresh', []))} fresh seeds "
                  "(benchmarks/_learned_ceiling.py)", "",
                  "| candidate | MACs | acc, first seeds (mean) | acc, fresh "
                  "seeds (mean ± std) | fresh - uniform (points) |",
                  "|---|---|---|---|---|"]
        base = np.mean(uni["fresh"]) if uni.get("fresh") else None
        for key, row in sorted(rows.items(),
                               key=lambda kv: -np.mean(kv[1]["first"])):
            fresh = row.get("fresh")
            cells = (f"{np.mean(fresh):.4f} ± {np.std(fresh):.4f}",
                     f"{100 * (np.mean(fresh) - base):+.2f}") if fresh \
                else ("", "")
            lines.append(f"| {key} | {row['macs']:.3f} | "
                         f"{np.mean(row['first']):.4f} | {cells[0]} | "
                         f"{cells[1]} |")
    return lines
