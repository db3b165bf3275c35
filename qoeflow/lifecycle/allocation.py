"""Training-budget allocation, DeepNetQoE Eq. (2): choose epochs e_u per job to

    maximise Σ_u E_all^u(e_u)   subject to   Σ_u cost_u(e_u) <= T,   base_u <= e_u <= max_u.

Each job is a ``JobTable`` of candidate epoch counts with their cumulative training seconds and
predicted E_all. The problem is a multiple-choice knapsack. Methods (``allocate(..., method)``):

- ``exact``: the true optimum for real-valued costs (see ``_exact``).
- ``ga``: the paper's genetic algorithm (binary-coded epoch offsets, tournament selection,
  two-point crossover, bit-flip mutation, repair of over-budget individuals, elimination of the
  worst); seeded, always feasible.
- ``random``, ``fcfs``, ``average``: the baselines of §IV-B. All start from the base epochs and
  then spend the remaining seconds: at random shares, first come first served in the given
  order (each job up to its max), or in equal shares (seconds a capped job cannot use go to
  the others). They spend the budget regardless of whether more epochs raise E_all.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Callable, Sequence

import numpy as np

METHODS = ("exact", "ga", "random", "fcfs", "average")


@dataclass(frozen=True)
class JobTable:
    """Candidate epoch counts of one job (base..max), cumulative training seconds and predicted QoE."""

    name: str
    epochs: np.ndarray
    cost_seconds: np.ndarray
    qoe: np.ndarray

    def __post_init__(self) -> None:
        e, c, q = (np.asarray(a, float).ravel() for a in (self.epochs, self.cost_seconds, self.qoe))
        if not (len(e) == len(c) == len(q)) or len(e) == 0:
            raise ValueError(f"job {self.name!r}: epochs ({len(e)}), cost_seconds ({len(c)}) and qoe ({len(q)}) "
                             "must be non-empty and of equal length")
        if not all(np.all(np.isfinite(a)) for a in (e, c, q)):
            raise ValueError(f"job {self.name!r}: epochs, cost_seconds and qoe must be finite")
        if np.any(np.diff(e) <= 0):
            raise ValueError(f"job {self.name!r}: epochs must be strictly increasing")
        if np.any(np.diff(c) < 0) or c[0] < 0:
            raise ValueError(f"job {self.name!r}: cost_seconds must be non-negative and non-decreasing")
        object.__setattr__(self, "epochs", e.astype(int) if np.all(e == np.round(e)) else e)
        object.__setattr__(self, "cost_seconds", c)
        object.__setattr__(self, "qoe", q)

    @property
    def base(self) -> float:
        return self.epochs[0]

    @property
    def max(self) -> float:
        return self.epochs[-1]


@dataclass(frozen=True)
class Plan:
    """The chosen epochs per job, their QoE, the total E_sum and the seconds it costs."""

    method: str
    epochs: dict[str, int]
    qoe: dict[str, float]
    e_sum: float
    seconds_used: float
    budget: float
    solve_seconds: float
    info: dict = field(default_factory=dict)


def base_cost(tables: Sequence[JobTable]) -> float:
    """Seconds needed to train every job to its base epochs."""
    return float(sum(t.cost_seconds[0] for t in tables))


def _eps(budget: float) -> float:
    return 1e-9 * max(1.0, abs(budget))


def _affordable(c: np.ndarray, seconds: float | np.ndarray) -> np.ndarray:
    """Largest index whose extra cost over the base is within `seconds` (0 if none)."""
    return np.maximum(np.searchsorted(c - c[0], seconds, side="right") - 1, 0)


# ------------------------------------------------------------------------------------------ exact
def _pareto(c: np.ndarray, q: np.ndarray) -> np.ndarray:
    """Indices of undominated candidates (no other is as cheap and at least as good), by cost."""
    order = np.lexsort((np.arange(len(c)), -q, c))
    qs = q[order]
    best_before = np.concatenate([[-np.inf], np.maximum.accumulate(qs)[:-1]])
    return order[qs > best_before]


def _maxplus(f_next: np.ndarray, w: np.ndarray, q: np.ndarray) -> np.ndarray:
    """g[b] = max_j q_j + f_next[b - w_j] over candidates with w_j <= b (w integer, q per w maximal)."""
    n = len(f_next)
    g = np.full(n, -np.inf)
    for wj, qj in zip(w.tolist(), q.tolist()):
        if wj < n:
            np.maximum(g[wj:], f_next[: n - wj] + qj, out=g[wj:])
    return g


def _hull(c: np.ndarray, q: np.ndarray) -> tuple[float, np.ndarray, np.ndarray]:
    """Upper concave hull of Pareto candidates (cost from 0, both rising): (q0, segment costs, gains)."""
    h: list[int] = [0]
    for j in range(1, len(c)):
        while len(h) >= 2 and (q[h[-1]] - q[h[-2]]) * (c[j] - c[h[-2]]) <= (q[j] - q[h[-2]]) * (c[h[-1]] - c[h[-2]]):
            h.pop()
        h.append(j)
    return float(q[0]), np.diff(c[h]), np.diff(q[h])


def _lp_table(segs: list[tuple[float, np.ndarray, np.ndarray]], delta: float, n: int) -> tuple[np.ndarray, np.ndarray]:
    """LP relaxation of the multiple-choice knapsack over the jobs in `segs`: its value and right
    slope at budgets 0, δ, ..., (n - 1)δ (concave, so f(r) <= f(bδ) + slope_b (r - bδ))."""
    dc = np.concatenate([s[1] for s in segs])
    dq = np.concatenate([s[2] for s in segs])
    order = np.argsort(-dq / dc, kind="stable")
    x = np.concatenate([[0.0], np.cumsum(dc[order])])
    y = sum(s[0] for s in segs) + np.concatenate([[0.0], np.cumsum(dq[order])])
    r = np.arange(n) * delta
    seg = np.clip(np.searchsorted(x, r, side="right") - 1, 0, len(x) - 1)
    return np.interp(r, x, y), np.append(dq[order] / dc[order], 0.0)[seg]


def _two_opt(cs: list[np.ndarray], qs: list[np.ndarray], idx: np.ndarray, slack: float, eps: float,
             sweeps: int = 50) -> np.ndarray:
    """Local search: re-split the seconds of every pair of jobs optimally until nothing improves."""
    idx = idx.copy()
    for _ in range(sweeps):
        improved = False
        for a in range(len(cs)):
            for b in range(a + 1, len(cs)):
                free = slack - sum(c[i] for c, i in zip(cs, idx)) + cs[a][idx[a]] + cs[b][idx[b]]
                ja = np.flatnonzero(cs[a] <= free + eps)
                jb = np.maximum(np.searchsorted(cs[b], free - cs[a][ja] + eps, side="right") - 1, 0)
                val = qs[a][ja] + qs[b][jb]
                best = int(np.argmax(val))
                if val[best] > qs[a][idx[a]] + qs[b][idx[b]] + 1e-12:
                    idx[a], idx[b], improved = ja[best], jb[best], True
        if not improved:
            break
    return idx


def _exact(tables: Sequence[JobTable], budget: float, resolution: int = 4096,
           max_states: int = 5_000_000) -> tuple[np.ndarray, dict]:
    """Provably optimal for the real-valued costs (floating-point tolerance 1e-9 relative).

    Costs are taken relative to each job's base epochs, so the budget is the slack over the base.
    1. Each job keeps only its Pareto candidates (cheaper-and-better dominates).
    2. Upper bounds for the jobs after k within r seconds, tabulated per cell of δ = slack /
       `resolution`: the smaller of a DP with costs rounded DOWN (a relaxation, read at
       floor(r / δ)) and the LP relaxation (concave hulls; value + slope at the cell's bottom).
    3. Incumbent: a feasible dive guided by the bounds, improved by pairwise local search.
    4. Exact search over the jobs (fewest candidates first): all (partial cost, partial QoE)
       states are kept except those dominated by another state or whose bound cannot beat the
       incumbent by more than the tolerance, so no better plan is discarded; the last job takes
       its best affordable candidate. The answer is the best state found, else the incumbent.
    Costs are never rounded in the answer; the bounds only affect speed. Safety valve: if more
    than `max_states` pairs would have to be examined at one job (near-ties by the million, e.g.
    QoE exactly proportional to cost), the incumbent is returned with info["proven_optimal"]
    False; it is then within info["bound"] - its value of the optimum.
    """
    K, eps = len(tables), _eps(budget)
    keep = [_pareto(t.cost_seconds, t.qoe) for t in tables]
    perm = np.argsort([len(k) for k in keep], kind="stable")
    keep = [keep[i] for i in perm]
    cs = [tables[i].cost_seconds[k] - tables[i].cost_seconds[0] for i, k in zip(perm, keep)]
    qs = [tables[i].qoe[k] for i, k in zip(perm, keep)]
    slack = budget - base_cost(tables)
    delta = slack / resolution if slack > 0 else 1.0
    n = resolution + 1
    ub, lp, segs = [np.zeros(n)], [(np.zeros(n), np.zeros(n))], []
    for c, q in zip(cs[::-1], qs[::-1]):
        w = np.floor(c / delta + 1e-9).astype(np.int64)
        last = np.r_[w[1:] != w[:-1], True]  # q rises with cost: the last of a cell is its best
        ub.append(_maxplus(ub[-1], w[last], q[last]))
        segs.append(_hull(c, q))
        lp.append(_lp_table(segs, delta, n))
    ub, lp = ub[::-1], lp[::-1]  # [k]: bounds for jobs k..K-1

    def bound(k: int, left: np.ndarray) -> np.ndarray:
        cell = np.clip(np.floor(left / delta + 1e-9), 0, resolution).astype(np.int64)
        f, slope = lp[k]
        return np.minimum(ub[k][cell], f[cell] + slope[cell] * (left - cell * delta))

    left, dive = slack, np.zeros(K, dtype=np.int64)  # incumbent: a bound-guided dive + local search
    for k in range(K):
        dive[k] = int(np.argmax(np.where(cs[k] <= left + eps, qs[k] + bound(k + 1, left - cs[k]), -np.inf)))
        left -= cs[k][dive[k]]
    dive = _two_opt(cs, qs, dive, slack, eps)
    inc = float(sum(q[j] for q, j in zip(qs, dive)))
    tol = 1e-9 * max(1.0, abs(inc))
    root = float(bound(0, np.array([slack]))[0])
    chosen = _search(cs, qs, slack, eps, bound, inc + tol, max_states)
    info = {"proven_optimal": chosen is not None, "bound": root, "incumbent": inc, "resolution": resolution}
    if chosen is None or chosen[1] <= inc:
        chosen = (dive.tolist(), inc)
    idx = np.zeros(K, dtype=np.int64)
    for pos, (i, j) in enumerate(zip(perm, chosen[0])):
        idx[i] = keep[pos][j]
    return idx, info


def _search(cs: list[np.ndarray], qs: list[np.ndarray], slack: float, eps: float,
            bound: Callable[[int, np.ndarray], np.ndarray], beat: float, max_states: int) -> tuple[list[int], float] | None:
    """Candidate indices and value of the best plan worth more than `beat` ((., -inf) if there is
    none), or None when more than `max_states` pairs would have to be examined at one job."""
    s_cost, s_val, back = np.zeros(1), np.zeros(1), []
    for k in range(len(cs) - 1):
        left = slack - s_cost
        lo = np.searchsorted(qs[k], beat - s_val - bound(k + 1, left), side="left")
        width = np.maximum(np.searchsorted(cs[k], left + eps, side="right") - lo, 0)
        if width.sum() > max_states:
            return None
        si = np.repeat(np.arange(len(left)), width)  # each state's affordable, promising window
        cj = lo[si] + np.arange(len(si)) - (np.cumsum(width) - width)[si]
        Cs, Vs = s_cost[si] + cs[k][cj], s_val[si] + qs[k][cj]
        ok = Vs + bound(k + 1, slack - Cs) > beat
        si, cj, Cs, Vs = si[ok], cj[ok], Cs[ok], Vs[ok]
        order = np.lexsort((-Vs, Cs))  # drop dominated states: pricier and not better
        best_before = np.concatenate([[-np.inf], np.maximum.accumulate(Vs[order])[:-1]])
        order = order[Vs[order] > best_before]
        s_cost, s_val = Cs[order], Vs[order]
        back.append((si[order], cj[order]))
    jl = np.maximum(np.searchsorted(cs[-1], slack - s_cost + eps, side="right") - 1, 0)
    final = s_val + qs[-1][jl]
    if len(final) == 0:
        return [], -np.inf
    state = int(np.argmax(final))
    chosen = [int(jl[state])]
    for prev, j in back[::-1]:
        chosen.append(int(j[state]))
        state = int(prev[state])
    return chosen[::-1], float(final.max())


# --------------------------------------------------------------------------------------------- GA
def _repair(idx: np.ndarray, cs: list[np.ndarray], slack: float) -> np.ndarray:
    """Shrink every job's extra seconds by one factor so the individual fits the budget."""
    extra = np.stack([c[idx[:, k]] - c[0] for k, c in enumerate(cs)], axis=1)
    total = extra.sum(axis=1)
    over = total > slack
    if not np.any(over):
        return idx
    lam = np.where(over, slack / np.where(total > 0, total, 1.0), 1.0) * (1 - 1e-12)
    out = idx.copy()
    for k, c in enumerate(cs):
        out[over, k] = np.minimum(idx[over, k], _affordable(c, lam[over] * extra[over, k]))
    return out


def _ga(tables: Sequence[JobTable], budget: float, rng: np.random.Generator, population: int = 64,
        generations: int = 200, crossover: float = 0.9, mutation: float | None = None, tournament: int = 3,
        seeds: Sequence[np.ndarray] = ()) -> tuple[np.ndarray, dict]:
    """Genetic algorithm over binary-coded epoch offsets; the plan is feasible at every step."""
    cs, qs = [t.cost_seconds for t in tables], [t.qoe for t in tables]
    m = np.array([len(c) for c in cs])
    bits = np.maximum(1, np.ceil(np.log2(m)).astype(int))
    starts = np.concatenate([[0], np.cumsum(bits)])
    L = int(starts[-1])
    pmut = mutation if mutation is not None else 1.0 / L
    slack = budget - base_cost(tables)
    weights = [2 ** np.arange(b - 1, -1, -1) for b in bits]

    def decode(g: np.ndarray) -> np.ndarray:
        ints = [g[:, starts[k]:starts[k + 1]] @ weights[k] for k in range(len(cs))]
        return np.stack([(v * m[k]) >> bits[k] for k, v in enumerate(ints)], axis=1)

    def encode(idx: np.ndarray) -> np.ndarray:
        g = np.zeros((len(idx), L), dtype=np.int64)
        for k in range(len(cs)):
            v = -((-idx[:, k] << bits[k]) // m[k])  # smallest code decoding to idx
            g[:, starts[k]:starts[k + 1]] = (v[:, None] >> np.arange(bits[k] - 1, -1, -1)) & 1
        return g

    def evaluate(g: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        idx = _repair(decode(g), cs, slack)
        return encode(idx), sum(q[idx[:, k]] for k, q in enumerate(qs))

    pop = rng.integers(0, 2, size=(population, L))
    if len(seeds):
        s = np.asarray(seeds, dtype=np.int64).reshape(-1, len(cs))[:population]
        pop[: len(s)] = encode(s)
    pop, fit = evaluate(pop)
    for _ in range(generations):
        cand = rng.integers(0, population, size=(population, tournament))
        parents = pop[cand[np.arange(population), np.argmax(fit[cand], axis=1)]]
        kids = parents.copy()
        a, b = kids[0::2], kids[1::2]
        n = min(len(a), len(b))
        cut = np.sort(rng.integers(0, L + 1, size=(n, 2)), axis=1)
        span = (np.arange(L) >= cut[:, :1]) & (np.arange(L) < cut[:, 1:]) & (rng.random((n, 1)) < crossover)
        a[:n], b[:n] = np.where(span, b[:n], a[:n]), np.where(span, a[:n], b[:n])
        kids ^= (rng.random(kids.shape) < pmut).astype(kids.dtype)
        kids, kfit = evaluate(kids)
        allg, allf = np.concatenate([pop, kids]), np.concatenate([fit, kfit])
        _, first = np.unique(allg, axis=0, return_index=True)  # eliminate duplicates, then the worst
        first = first[np.argsort(-allf[first], kind="stable")][:population]
        if len(first) < population:
            first = np.concatenate([first, rng.choice(len(allg), population - len(first))])
        pop, fit = allg[first], allf[first]
    best = int(np.argmax(fit))
    return _repair(decode(pop[best: best + 1]), cs, slack)[0], {"generations": generations, "population": population}


# -------------------------------------------------------------------------------------- baselines
def _fcfs(tables: Sequence[JobTable], budget: float) -> np.ndarray:
    left, idx = budget - base_cost(tables), []
    for t in tables:
        j = int(_affordable(t.cost_seconds, left + _eps(budget)))
        left -= t.cost_seconds[j] - t.cost_seconds[0]
        idx.append(j)
    return np.array(idx)


def _spend(tables: Sequence[JobTable], budget: float, shares: Callable[[int], np.ndarray],
           pick: Callable[[np.ndarray, np.ndarray], int]) -> np.ndarray:
    """Hand out the remaining seconds in rounds of `shares` (fractions over the open jobs), then
    top up one epoch at a time (job chosen by `pick(open jobs, extra seconds so far)`)."""
    cs = [t.cost_seconds for t in tables]
    idx, left, eps = np.zeros(len(cs), dtype=np.int64), budget - base_cost(tables), _eps(budget)

    def open_jobs() -> np.ndarray:
        return np.array([k for k, c in enumerate(cs) if idx[k] + 1 < len(c) and c[idx[k] + 1] - c[idx[k]] <= left + eps],
                        dtype=np.int64)

    while len(jobs := open_jobs()):
        spent = left
        for k, s in zip(jobs, shares(len(jobs)) * left):
            j = int(_affordable(cs[k], cs[k][idx[k]] - cs[k][0] + s + eps))
            left -= cs[k][j] - cs[k][idx[k]]
            idx[k] = j
        if left >= spent and len(jobs := open_jobs()):  # no share bought a paid epoch: top up one
            k = pick(jobs, np.array([cs[i][idx[i]] - cs[i][0] for i in jobs]))
            left -= cs[k][idx[k] + 1] - cs[k][idx[k]]
            idx[k] += 1
    return idx


def _average(tables: Sequence[JobTable], budget: float) -> np.ndarray:
    return _spend(tables, budget, lambda n: np.full(n, 1.0 / n), lambda jobs, extra: int(jobs[np.argmin(extra)]))


def _random(tables: Sequence[JobTable], budget: float, rng: np.random.Generator) -> np.ndarray:
    return _spend(tables, budget, lambda n: rng.dirichlet(np.ones(n)), lambda jobs, extra: int(rng.choice(jobs)))


# ------------------------------------------------------------------------------------- public API
def check_problem(tables: Sequence[JobTable], budget: float) -> None:
    """Refuse an empty job list, repeated names, or a budget below the base epochs' cost."""
    if not tables:
        raise ValueError("no jobs to allocate")
    names = [t.name for t in tables]
    if len(set(names)) != len(names):
        raise ValueError(f"job names must be unique, got {names}")
    if not np.isfinite(budget):
        raise ValueError(f"budget must be a finite number of seconds, got {budget}")
    need = base_cost(tables)
    if budget < need:
        raise ValueError(f"budget {budget:.6g} s is below the cost of the base epochs of all jobs ({need:.6g} s)")


def plan_from(tables: Sequence[JobTable], idx: Sequence[int], budget: float, method: str = "given",
              solve_seconds: float = 0.0, info: dict | None = None) -> Plan:
    """The Plan of candidate indices `idx` (one per job)."""
    q = {t.name: float(t.qoe[j]) for t, j in zip(tables, idx)}
    used = float(sum(t.cost_seconds[j] for t, j in zip(tables, idx)))
    return Plan(method, {t.name: int(t.epochs[j]) for t, j in zip(tables, idx)}, q, float(sum(q.values())),
                used, float(budget), solve_seconds, info or {})


def allocate(tables: Sequence[JobTable], budget: float, method: str = "exact", seed: int = 0, **options) -> Plan:
    """Solve Eq. (2) with `method` (one of METHODS); options go to the solver (e.g. population)."""
    check_problem(tables, budget)
    if method not in METHODS:
        raise ValueError(f"unknown allocation method {method!r} (allowed: {', '.join(METHODS)})")
    rng = np.random.default_rng(seed)
    t0, info = time.perf_counter(), {}
    if method == "exact":
        idx, info = _exact(tables, budget, **options)
    elif method == "ga":
        idx, info = _ga(tables, budget, rng, **options)
    elif method == "random":
        idx = _random(tables, budget, rng)
    elif method == "fcfs":
        idx = _fcfs(tables, budget)
    else:
        idx = _average(tables, budget)
    plan = plan_from(tables, idx, budget, method, time.perf_counter() - t0, info)
    assert plan.seconds_used <= budget + _eps(budget), (plan.seconds_used, budget)
    return plan
