"""Contextual-bandit model selection with delayed, noisy QoE feedback (paper 001, §IV-A–B, Eqs. 4–9, Alg. 1).

Every candidate model ("arm") a offered in round t comes with a context x_{t,a} ∈ R^d (features of the model
and of the device asking). The expected QoE is linear, E[r_{t,a}] = x_{t,a}ᵀθ (Eq. 2), and the rating of the
model chosen in round t arrives d_t rounds later with noise of variance λ_t = λ^η + λ^v_{d_t} (Eq. 4).

``DelayedLinUCB`` keeps the LMMSE estimate of θ (Eq. 6) and its error covariance C (Eq. 7) and picks
argmax_a x_{t,a}ᵀθ̂ + α·sqrt(x_{t,a}ᵀ C x_{t,a}) (Eqs. 8–9), at random until the first rating arrives (Alg. 1,
line 7). ``FeedbackQueue`` holds ratings until their round comes.

Updates are incremental: each rating is a rank-one (Sherman–Morrison) update of C and the matching
recursive-least-squares step of θ̂, O(d²), never a refit of the history. The sufficient statistics of Eq. 6
(δI + Σ x xᵀ/λ and Σ x y/λ) are kept beside them, and every ``refresh`` ratings C and θ̂ are solved afresh
from those by Cholesky, O(d³): rounding errors of the rank-one updates cannot pile up over long runs.

Where the paper is silent, and what we chose:

- Table II writes λ^v_{d_t} = 5/t²; since λ^v falls with the delay (§IV-A2), t there is the delay d_t:
  ``paper_noise_variance(d) = 0.4 + 5/d²``. Delays are whole rounds ≥ 1 for it (5/0² has no value).
- Ties in Eq. 9 go to the first arm offered; the random choices draw from the policy's own seeded generator.
"""

from __future__ import annotations

import math
from collections import defaultdict
from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np

NoiseVariance = Callable[[int], float]


def paper_noise_variance(delay: int, mismatch: float = 0.4, observation: float = 5.0) -> float:
    """λ_t = λ^η + λ^v_{d_t} with Table II's λ^η = 0.4 and λ^v_d = 5/d² (noisier when rated sooner)."""
    if delay < 1:
        raise ValueError(f"delay must be at least 1 round for λ^v = {observation}/d², got {delay}")
    return mismatch + observation / delay**2


def _check_delay(delay: int) -> int:
    if isinstance(delay, bool) or int(delay) != delay or delay < 0:
        raise ValueError(f"delay must be a whole number of rounds ≥ 0, got {delay!r}")
    return int(delay)


class LMMSE:
    """The LMMSE estimate of θ from weighted observations y = xᵀθ + n, n ~ N(0, λ), prior precision δI (Eq. 6),
    with its error covariance (Eq. 7); one O(d²) update per observation.

    The sufficient statistics (δI + Σ x xᵀ/λ and Σ x y/λ) are gathered as whitened rows x/√λ, y/√λ and
    folded in by one matrix product every `refresh` observations, when C and θ̂ are solved afresh."""

    def __init__(self, dim: int, delta: float = 0.1, refresh: int = 4096):
        if isinstance(dim, bool) or int(dim) != dim or dim < 1:
            raise ValueError(f"dim must be a positive integer, got {dim!r}")
        if not (math.isfinite(delta) and delta > 0):
            raise ValueError(f"delta (prior precision δ) must be positive and finite, got {delta!r}")
        if refresh < 1:
            raise ValueError(f"refresh must be at least 1, got {refresh!r}")
        self.dim, self.delta, self.refresh = int(dim), float(delta), int(refresh)
        self._precision = np.eye(self.dim) * self.delta  # δI + X C_n⁻¹ Xᵀ, up to the rows not yet folded in
        self._weighted = np.zeros(self.dim)  # X C_n⁻¹ y, likewise
        self._rows = np.empty((self.refresh, self.dim))  # x/√λ of observations not yet folded in
        self._targets = np.empty(self.refresh)  # y/√λ of the same
        self._unfolded = 0
        self.cov = np.eye(self.dim) / self.delta  # C_ε (Eq. 7)
        self.theta = np.zeros(self.dim)  # θ̂ (Eq. 6)
        self.count = 0

    def check_context(self, x: np.ndarray, what: str = "context") -> np.ndarray:
        """`x` as a float array whose last axis is d, finite; ValueError otherwise."""
        x = np.asarray(x, dtype=float)
        if x.ndim == 0 or x.shape[-1] != self.dim:
            raise ValueError(f"{what} must have {self.dim} features in its last axis, got shape {x.shape}")
        if not np.isfinite(x).all():
            raise ValueError(f"{what} must be finite")
        return x

    def add(self, x: np.ndarray, y: float, variance: float) -> None:
        """Take one observation `y` of context `x` with noise variance `variance`."""
        x = self.check_context(x).ravel()
        if not math.isfinite(y):
            raise ValueError(f"reward must be finite, got {y!r}")
        if not (math.isfinite(variance) and variance > 0):
            raise ValueError(f"noise variance must be positive and finite, got {variance!r}")
        cx = self.cov @ x
        scale = 1.0 / (variance + x @ cx)
        self.theta += cx * ((y - x @ self.theta) * scale)  # recursive least squares
        self.cov -= np.outer(cx, cx * scale)  # Sherman–Morrison
        whiten = 1.0 / math.sqrt(variance)
        self._rows[self._unfolded] = x * whiten
        self._targets[self._unfolded] = y * whiten
        self._unfolded += 1
        self.count += 1
        if self._unfolded == self.refresh:
            self.solve()

    def statistics(self) -> tuple[np.ndarray, np.ndarray]:
        """(δI + X C_n⁻¹ Xᵀ, X C_n⁻¹ y) of Eq. 6, every observation so far folded in."""
        rows, targets = self._rows[:self._unfolded], self._targets[:self._unfolded]
        self._precision += rows.T @ rows
        self._weighted += rows.T @ targets
        self._unfolded = 0
        return self._precision, self._weighted

    def solve(self) -> None:
        """C and θ̂ solved afresh from the sufficient statistics (Cholesky), dropping accumulated rounding."""
        from scipy.linalg import cho_factor, cho_solve

        precision, weighted = self.statistics()
        factor = cho_factor(precision)
        self.cov = cho_solve(factor, np.eye(self.dim))
        self.cov = (self.cov + self.cov.T) / 2
        self.theta = cho_solve(factor, weighted)


def batch_lmmse(contexts: np.ndarray, rewards: np.ndarray, variances: np.ndarray, delta: float
                ) -> tuple[np.ndarray, np.ndarray]:
    """Eqs. 6–7 solved directly from all observations: (θ̂, C_ε). The reference for the incremental updates."""
    X = np.asarray(contexts, float).T  # d × n, as in the paper
    inv_noise = 1.0 / np.asarray(variances, float)
    precision = delta * np.eye(X.shape[0]) + (X * inv_noise) @ X.T
    cov = np.linalg.inv(precision)
    return cov @ ((X * inv_noise) @ np.asarray(rewards, float)), cov


@dataclass(frozen=True)
class Rating:
    """A rating on its way: the context of the chosen arm, the rating, its delay and the arm's id."""

    context: np.ndarray
    reward: float
    delay: int
    arm: int


class FeedbackQueue:
    """Ratings in flight: `push` a rating made in round t with delay d; `arrived(t + d)` releases it."""

    def __init__(self) -> None:
        self._due: dict[int, list[Rating]] = defaultdict(list)
        self.pending = 0

    def push(self, round_: int, rating: Rating) -> None:
        self._due[round_ + _check_delay(rating.delay)].append(rating)
        self.pending += 1

    def arrived(self, round_: int) -> list[Rating]:
        """Ratings due by `round_` (rounds are visited in order, so only `round_`'s own are left)."""
        out = self._due.pop(round_, [])
        self.pending -= len(out)
        return out


class Policy:
    """Chooses one of the arms offered in a round and learns from ratings as they arrive."""

    name = "policy"

    def choose(self, contexts: np.ndarray, arms: np.ndarray) -> int:
        """Index (into this round's `contexts`, shape A_t × d, and `arms`, their ids) of the arm chosen."""
        raise NotImplementedError

    def update(self, rating: Rating) -> None:
        """Take a rating that has just arrived."""


class DelayedLinUCB(Policy):
    """Algorithm 1: random until the first rating, then UCB on the LMMSE estimate (Eqs. 6–9)."""

    name = "linucb"

    def __init__(self, dim: int, *, alpha: float = 1.5, delta: float = 0.1,
                 noise_variance: NoiseVariance = paper_noise_variance, seed: int = 0, refresh: int = 4096):
        if not (math.isfinite(alpha) and alpha >= 0):
            raise ValueError(f"alpha must be ≥ 0 and finite, got {alpha!r}")
        self.alpha = float(alpha)
        self.estimate = LMMSE(dim, delta, refresh)
        self.noise_variance = noise_variance
        self.rng = np.random.default_rng(seed)

    @property
    def theta(self) -> np.ndarray:
        return self.estimate.theta

    def scores(self, contexts: np.ndarray) -> np.ndarray:
        """p_{t,a} of Eq. 8 for every row of `contexts`."""
        X = np.asarray(contexts, dtype=float)
        if X.ndim != 2 or X.shape[1] != self.estimate.dim:
            raise ValueError(f"contexts must be a 2-D array (arms × {self.estimate.dim}), got shape {X.shape}")
        spread = np.einsum("ij,ij->i", X @ self.estimate.cov, X)  # xᵀCx per row; the 3-operand einsum is 5× slower
        p = X @ self.estimate.theta + self.alpha * np.sqrt(np.maximum(spread, 0.0))
        if not np.isfinite(p).all():  # a non-finite context makes its score NaN or infinite
            raise ValueError("contexts must be finite")
        return p

    def choose(self, contexts: np.ndarray, arms: np.ndarray) -> int:
        if self.estimate.count == 0:
            self.estimate.check_context(contexts)
            return int(self.rng.integers(len(contexts)))
        return int(np.argmax(self.scores(contexts)))

    def update(self, rating: Rating) -> None:
        self.estimate.add(rating.context, rating.reward, self.noise_variance(rating.delay))


class Oracle(Policy):
    """Knows θ: the best arm of every round (paper's "one for one")."""

    name = "oracle"

    def __init__(self, theta: np.ndarray):
        self.theta = np.asarray(theta, float)

    def choose(self, contexts: np.ndarray, arms: np.ndarray) -> int:
        return int(np.argmax(np.asarray(contexts) @ self.theta))


class Static(Policy):
    """One model for everyone (paper's "one for all"): the arm ids in order of preference, the first offered
    in a round is chosen. `best_static` gives the best-in-hindsight order."""

    name = "static"

    def __init__(self, preference: Sequence[int]):
        self.rank = {int(a): i for i, a in enumerate(preference)}
        if not self.rank:
            raise ValueError("Static needs at least one arm id")

    def choose(self, contexts: np.ndarray, arms: np.ndarray) -> int:
        ranks = [self.rank.get(int(a), len(self.rank)) for a in arms]
        return int(np.argmin(ranks))


class Uniform(Policy):
    """A uniformly random arm every round: what no learning earns."""

    name = "random"

    def __init__(self, seed: int = 0):
        self.rng = np.random.default_rng(seed)

    def choose(self, contexts: np.ndarray, arms: np.ndarray) -> int:
        return int(self.rng.integers(len(contexts)))
