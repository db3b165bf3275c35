"""Contextual-bandit benchmark (issue: deployment simulation; paper 001 §IV-C, Fig. 3).

1. The paper's setting (Table II), 20 seeds: normalised time-average QoE at T = 2000 per method (Oracle = 1,
   worst arm = 0), ‖θ̂ − θ‖, with the peer LinUCBs of contextualbandits and mabwiser on the same streams.
   Goal: ours ≥ 0.9, Static clearly below, ‖θ̂ − θ‖ ≤ 0.15.
2. Throughput on one core: decisions per second with delayed feedback for T = 100,000, A = 100, d = 16 (the
   paper's stream generator at that size): ours; a plain numpy Sherman–Morrison loop (the covariance updated
   rating by rating, θ̂ = C b solved every round, the UCB by a three-operand einsum); and the two peers on the
   same stream's first rounds (at ~200 decisions per second the whole stream would take minutes each).
   Goal: ours ≥ 20,000 per second.

    python benchmarks/bandit.py [--seeds 20] [--rounds 100000] [--peer-rounds 2000]

Writes benchmarks/results/bandit.{md,json,png}.
"""

from __future__ import annotations

import argparse
import itertools
import json
import platform
import sys
import time
from pathlib import Path

import numpy as np
from threadpoolctl import threadpool_limits

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from qoeflow.lifecycle import bandit_peers  # noqa: E402
from qoeflow.lifecycle.bandit import DelayedLinUCB, Policy  # noqa: E402
from qoeflow.lifecycle.bandit_sim import PaperSetup, PaperStream, Stream, replicate_paper, run  # noqa: E402
from qoeflow.plots import bandit_figure  # noqa: E402

RESULTS = ROOT / "benchmarks" / "results"


class PlainShermanMorrison(Policy):
    """The textbook loop: C updated by Sherman–Morrison per rating, θ̂ = C b and the UCB recomputed each round."""

    name = "plain numpy"

    def __init__(self, dim: int, alpha: float, delta: float, noise_variance):
        self.cov, self.b = np.eye(dim) / delta, np.zeros(dim)
        self.alpha, self.noise_variance, self.seen = alpha, noise_variance, 0

    def choose(self, contexts, arms):
        if not self.seen:
            return 0
        theta = self.cov @ self.b
        p = contexts @ theta + self.alpha * np.sqrt(np.einsum("ij,jk,ik->i", contexts, self.cov, contexts))
        return int(np.argmax(p))

    def update(self, rating):
        x, lam = rating.context, self.noise_variance(rating.delay)
        cx = self.cov @ x
        self.cov -= np.outer(cx, cx) / (lam + x @ cx)
        self.b += x * rating.reward / lam
        self.seen += 1


class Prefix(Stream):
    """The first `rounds` rounds of another stream."""

    def __init__(self, stream: Stream, rounds: int):
        self.stream, self.rounds, self.dim = stream, min(rounds, stream.rounds), stream.dim

    def __iter__(self):
        return itertools.islice(iter(self.stream), self.rounds)


def throughput(rounds: int, peer_rounds: int) -> dict:
    """Decisions per second, policy time only and whole loop (stream generation and feedback bookkeeping
    included), for ours, the plain loop and the peers."""
    theta = np.random.default_rng(7).normal(size=16)
    setup = PaperSetup(rounds=rounds, arms=100, dim=16, theta=tuple(theta / np.linalg.norm(theta)))
    stream = PaperStream(setup, seed=0)
    start = time.perf_counter()
    generated = sum(1 for _ in stream)
    stream_seconds = time.perf_counter() - start
    out = {"rounds": rounds, "arms": setup.arms, "dim": setup.dim, "stream_seconds": stream_seconds,
           "stream_rounds_per_second": generated / stream_seconds, "methods": {}}
    makers = {"ours": (lambda: DelayedLinUCB(16, alpha=setup.alpha, delta=setup.delta,
                                             noise_variance=setup.noise_variance), rounds),
              "plain numpy": (lambda: PlainShermanMorrison(16, setup.alpha, setup.delta, setup.noise_variance),
                              rounds)}
    makers.update({name: (lambda name=name: bandit_peers.make(name, setup.arms, alpha=setup.alpha, delta=setup.delta),
                          peer_rounds) for name in bandit_peers.PEERS})
    for name, (make, n) in makers.items():
        part = Prefix(stream, n)
        start = time.perf_counter()
        trace = run(make(), part)
        wall = time.perf_counter() - start
        out["methods"][name] = {"rounds": n, "policy_seconds": trace.seconds, "loop_seconds": wall,
                                "decisions_per_second": n / trace.seconds, "loop_decisions_per_second": n / wall,
                                "mean_expected_qoe": float(trace.earned.mean())}
        print(f"{name}: {n / trace.seconds:,.0f} decisions/s (policy), {n / wall:,.0f}/s (loop)", flush=True)
    ours = out["methods"]["ours"]["decisions_per_second"]
    out["ratios"] = {name: ours / m["decisions_per_second"] for name, m in out["methods"].items() if name != "ours"}
    return out


def markdown(paper: dict, speed: dict, command: str) -> str:
    m = paper["methods"]
    lines = ["# Contextual bandit with delayed, noisy feedback (paper 001)", "",
             f"`{command}` on {platform.processor() or platform.machine()}, one thread.", "",
             f"## Paper setting (Table II), {paper['seeds']} seeds, T = {paper['setup']['rounds']}", "",
             "| method | normalised QoE mean | sd | min | regret mean | seconds per seed |",
             "| --- | ---: | ---: | ---: | ---: | ---: |"]
    for name, e in m.items():
        q = e["normalised_qoe"]
        lines.append(f"| {name} | {q['mean']:.3f} | {q['std']:.3f} | {q['min']:.3f} | {e['regret']['mean']:.1f} | "
                     f"{e['seconds']['mean']:.3f} |")
    d = m["linucb"]["theta"]["distance"]
    lines += ["", f"θ = {paper['setup']['theta']}; our θ̂, mean over seeds: {m['linucb']['theta']['mean']}.",
              f"‖θ̂ − θ‖: mean {d['mean']:.3f}, sd {d['std']:.3f}, max {d['max']:.3f} (goal ≤ 0.15).", "",
              f"## Throughput: T = {speed['rounds']:,}, A = {speed['arms']}, d = {speed['dim']}", "",
              f"Generating the stream alone: {speed['stream_rounds_per_second']:,.0f} rounds/s.", "",
              "| method | rounds | decisions/s (policy) | decisions/s (whole loop) | ours ÷ it |",
              "| --- | ---: | ---: | ---: | ---: |"]
    for name, e in speed["methods"].items():
        ratio = "" if name == "ours" else f"{speed['ratios'][name]:,.1f}×"
        lines.append(f"| {name} | {e['rounds']:,} | {e['decisions_per_second']:,.0f} | "
                     f"{e['loop_decisions_per_second']:,.0f} | {ratio} |")
    lines += ["", "Policy: the time of choosing and of taking the ratings that arrived; whole loop: also the stream's",
              "generation and the feedback queue. Peers ran the stream's first rounds only."]
    return "\n".join(lines) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--seeds", type=int, default=20)
    ap.add_argument("--rounds", type=int, default=100_000)
    ap.add_argument("--peer-rounds", type=int, default=2000)
    args = ap.parse_args()
    command = "python benchmarks/bandit.py" + "".join(f" {a}" for a in sys.argv[1:])
    with threadpool_limits(1):
        paper = replicate_paper(PaperSetup(), range(args.seeds), bandit_peers.PEERS,
                                progress=lambda done, total: print(f"paper seed {done}/{total}", flush=True))
        speed = throughput(args.rounds, args.peer_rounds)
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "bandit.json").write_text(json.dumps({"command": command, "paper": paper, "throughput": speed},
                                                    indent=1) + "\n")
    (RESULTS / "bandit.md").write_text(markdown(paper, speed, command))
    bandit_figure(paper, "Paper 001, Table II setting").savefig(RESULTS / "bandit.png", dpi=90)
    print((RESULTS / "bandit.md").read_text())


if __name__ == "__main__":
    main()
