"""Simulated model selection: reward streams every policy sees alike, the delayed-feedback loop, and the
figures of paper 001 §IV-C (time-average QoE normalised so Oracle is 1 and the worst choice 0; regret).

A stream is replayable: iterating it again yields the same rounds, so Static's best-in-hindsight arm, the
Oracle and every learner are scored on one and the same sequence of devices, noise draws and delays.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Callable, Iterable, Iterator, Sequence

import numpy as np

from qoeflow.lifecycle.bandit import (DelayedLinUCB, FeedbackQueue, Oracle, Policy, Rating, Static, Uniform,
                                      paper_noise_variance)


@dataclass(frozen=True)
class Round:
    """One round: the arms offered (ids and contexts), their expected QoE, and the noise and delay that the
    rating of whichever arm is chosen will carry."""

    contexts: np.ndarray  # A_t × d
    arms: np.ndarray  # A_t arm ids
    expected: np.ndarray  # A_t, x_{t,a}ᵀθ (or the simulator's true mean QoE)
    noise: float
    delay: int


class Stream:
    """A replayable sequence of rounds."""

    dim: int
    rounds: int

    def __iter__(self) -> Iterator[Round]:
        raise NotImplementedError


@dataclass(frozen=True)
class PaperSetup:
    """Table II of paper 001."""

    rounds: int = 2000  # T
    arms: int = 10  # A
    dim: int = 4  # d
    max_delay: int = 40  # t_c; delays uniform in [1, t_c]
    alpha: float = 1.5
    delta: float = 0.1
    mismatch: float = 0.4  # λ^η
    observation: float = 5.0  # λ^v_d = observation / d²
    theta: tuple[float, ...] = (-0.5, 0.37, -0.36, 0.69)

    def __post_init__(self) -> None:
        if len(self.theta) != self.dim:
            raise ValueError(f"theta has {len(self.theta)} entries, dim is {self.dim}")
        if self.rounds < 1 or self.arms < 1 or self.max_delay < 1:
            raise ValueError("rounds, arms and max_delay must be at least 1")

    def noise_variance(self, delay: int) -> float:
        return paper_noise_variance(delay, self.mismatch, self.observation)


@dataclass
class PaperStream(Stream):
    """The paper's synthetic stream: contexts uniform in [0, 1]^d for every arm and round, rewards x θ plus
    N(0, λ^η) model mismatch plus N(0, λ^v_d) observation noise, delays uniform in [1, t_c]. Generated in
    chunks, so long streams (T = 10⁵, A = 100) never sit in memory whole."""

    setup: PaperSetup
    seed: int = 0
    chunk: int = 1024

    def __post_init__(self) -> None:
        self.dim, self.rounds = self.setup.dim, self.setup.rounds
        self.theta = np.asarray(self.setup.theta, float)

    def __iter__(self) -> Iterator[Round]:
        s = self.setup
        rng = np.random.default_rng(self.seed)
        arms = np.arange(s.arms)
        for start in range(0, s.rounds, self.chunk):
            n = min(self.chunk, s.rounds - start)
            contexts = rng.uniform(0.0, 1.0, (n, s.arms, s.dim))
            expected = contexts @ self.theta
            delays = rng.integers(1, s.max_delay + 1, n)
            observation = s.observation / delays.astype(float) ** 2
            noise = rng.normal(0.0, np.sqrt(s.mismatch), n) + rng.normal(0.0, 1.0, n) * np.sqrt(observation)
            for i in range(n):
                yield Round(contexts[i], arms, expected[i], float(noise[i]), int(delays[i]))


@dataclass
class Trace:
    """What one policy earned on a stream: per round the expected QoE of its choice and the arm id; the
    policy itself (for its final estimate) and its wall seconds of choosing and learning."""

    name: str
    earned: np.ndarray
    arms: np.ndarray
    seconds: float
    policy: Policy = field(repr=False)


@dataclass(frozen=True)
class Bounds:
    """Per round, the best and worst expected QoE on offer (where the Oracle knows the expectation given the
    context, as in the paper's synthetic stream, its choice is the best); per arm id, the total expected QoE
    over the rounds it was offered (Static's hindsight)."""

    best: np.ndarray
    worst: np.ndarray
    totals: dict[int, float]

    def static_preference(self) -> list[int]:
        """Arm ids by total expected QoE, best first: Static's best-in-hindsight choice and its fallbacks."""
        return sorted(self.totals, key=lambda a: -self.totals[a])


def bounds(stream: Iterable[Round]) -> Bounds:
    """Best, worst and per-arm totals of a stream."""
    best, worst, totals = [], [], {}
    for r in stream:
        best.append(float(np.max(r.expected)))
        worst.append(float(np.min(r.expected)))
        for a, q in zip(r.arms.tolist(), r.expected.tolist()):
            totals[a] = totals.get(a, 0.0) + q
    return Bounds(np.array(best), np.array(worst), totals)


def run(policy: Policy, stream: Stream, progress: Callable[[int], None] | None = None) -> Trace:
    """Algorithm 1's loop: each round the ratings due arrive first, then the policy chooses; the chosen
    arm's rating (expected QoE + the round's noise) is sent with the round's delay. The trace's seconds are
    the policy's own (choosing and learning), not the stream's."""
    queue = FeedbackQueue()
    earned, chosen = np.empty(stream.rounds), np.empty(stream.rounds, dtype=int)
    clock, seconds = time.perf_counter, 0.0
    for t, r in enumerate(stream):
        start = clock()
        for rating in queue.arrived(t):
            policy.update(rating)
        i = policy.choose(r.contexts, r.arms)
        seconds += clock() - start
        earned[t], chosen[t] = r.expected[i], r.arms[i]
        queue.push(t, Rating(r.contexts[i], float(r.expected[i] + r.noise), r.delay, int(r.arms[i])))
        if progress is not None and (t + 1) % 1000 == 0:
            progress(t + 1)
    return Trace(policy.name, earned, chosen, seconds, policy)


def normalised_average(earned: np.ndarray, oracle: np.ndarray, worst: np.ndarray) -> np.ndarray:
    """Time-average QoE after each round, normalised so the Oracle's is 1 and the worst choice's 0 (Fig. 3).
    `oracle` and `worst` are per-round expected QoE of the Oracle's choice and of the worst arm offered."""
    t = np.arange(1, len(earned) + 1)
    mean, top, low = np.cumsum(earned) / t, np.cumsum(oracle) / t, np.cumsum(worst) / t
    return (mean - low) / np.maximum(top - low, 1e-12)


def regret(earned: np.ndarray, oracle: np.ndarray) -> np.ndarray:
    """Cumulative regret (Eq. 3) in expected QoE after each round, against the Oracle's choices."""
    return np.cumsum(oracle - earned)


def paper_policies(setup: PaperSetup, seed: int, peers: Sequence[str] = ()) -> list[Policy]:
    """The methods of Fig. 3 for one seed, plus uniform random and any peer LinUCBs by name."""
    from qoeflow.lifecycle import bandit_peers

    ours = DelayedLinUCB(setup.dim, alpha=setup.alpha, delta=setup.delta, noise_variance=setup.noise_variance,
                         seed=seed)
    policies: list[Policy] = [ours, Oracle(np.asarray(setup.theta)), Uniform(seed)]
    policies += [bandit_peers.make(name, setup.arms, alpha=setup.alpha, seed=seed) for name in peers]
    return policies


def evaluate(stream: Stream, policies: Sequence[Policy], progress: Callable[[str, int], None] | None = None
             ) -> tuple[Bounds, list[Trace]]:
    """Every policy, and Static with its best-in-hindsight arm, on one stream."""
    b = bounds(stream)
    traces = []
    for policy in [*policies, Static(b.static_preference())]:
        report = None if progress is None else (lambda t, name=policy.name: progress(name, t))
        traces.append(run(policy, stream, report))
    return b, traces


def _stats(values: Sequence[float]) -> dict[str, float]:
    a = np.asarray(values, float)
    return {"mean": float(a.mean()), "std": float(a.std(ddof=1)) if len(a) > 1 else 0.0,
            "min": float(a.min()), "max": float(a.max())}


def checkpoints(rounds: int, points: int = 100) -> np.ndarray:
    """Rounds (1-based) at which curves are kept: `points` of them, evenly spread, the last round included."""
    return np.unique(np.linspace(1, rounds, min(points, rounds)).round().astype(int))


def seed_record(b: Bounds, traces: Sequence[Trace], rounds: np.ndarray, oracle: str = "oracle") -> dict:
    """One seed's figures per method, normalised against the trace named `oracle` and the worst arm of each
    round: final normalised time-average QoE and regret, wall seconds, the normalised curve at `rounds`, the
    share of rounds each arm id was chosen, and a learner's final θ̂. Plain JSON types."""
    top = next(t.earned for t in traces if t.name == oracle)
    out = {}
    for t in traces:
        curve = normalised_average(t.earned, top, b.worst)
        ids, counts = np.unique(t.arms, return_counts=True)
        out[t.name] = {"normalised_qoe": float(curve[-1]), "regret": float(regret(t.earned, top)[-1]),
                       "seconds": t.seconds, "curve": curve[np.asarray(rounds) - 1].round(5).tolist(),
                       "choices": {int(a): float(c / len(t.arms)) for a, c in zip(ids, counts)}}
        if isinstance(t.policy, DelayedLinUCB):
            out[t.name]["theta"] = t.policy.theta.round(5).tolist()
    return out


def combine(records: Sequence[dict], rounds: np.ndarray, theta: np.ndarray | None = None) -> dict:
    """Seeds' records (`seed_record`) as one summary: per method mean, spread and extremes over seeds, the mean
    curve and choice shares; a learner's θ̂ per seed and, given the true θ, its distance."""
    methods = {}
    for name in records[0]:
        runs = [r[name] for r in records]
        entry = {key: _stats([r[key] for r in runs]) for key in ("normalised_qoe", "regret", "seconds")}
        entry["curve"] = np.mean([r["curve"] for r in runs], axis=0).round(5).tolist()
        arms = sorted({int(a) for r in runs for a in r["choices"]})
        entry["choices"] = {a: float(np.mean([r["choices"].get(a, r["choices"].get(str(a), 0.0)) for r in runs]))
                            for a in arms}
        if "theta" in runs[0]:
            thetas = np.array([r["theta"] for r in runs])
            entry["theta"] = {"mean": thetas.mean(axis=0).round(4).tolist(), "per_seed": thetas.round(4).tolist()}
            if theta is not None:
                entry["theta"]["distance"] = _stats(np.linalg.norm(thetas - theta, axis=1))
        methods[name] = entry
    return {"seeds": len(records), "rounds": [int(r) for r in rounds], "methods": methods}


def replicate_paper(setup: PaperSetup, seeds: Sequence[int], peers: Sequence[str] = (),
                    progress: Callable[[int, int], None] | None = None) -> dict:
    """Fig. 3 over several seeds: every method on each seed's stream, combined; with Table II's settings."""
    rounds = checkpoints(setup.rounds)
    records = []
    for i, seed in enumerate(seeds):
        records.append(seed_record(*evaluate(PaperStream(setup, seed), paper_policies(setup, seed, peers)), rounds))
        if progress is not None:
            progress(i + 1, len(seeds))
    summary = combine(records, rounds, np.asarray(setup.theta))
    summary["setup"] = {k: (list(v) if isinstance(v, tuple) else v) for k, v in setup.__dict__.items()}
    return summary
