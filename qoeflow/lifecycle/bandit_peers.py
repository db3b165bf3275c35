"""Peer LinUCBs from other libraries, fed the same rounds and the same delayed ratings as ours.

Their model differs from paper 001's: each arm learns its own θ_a by unweighted ridge regression on the
contexts it was chosen in (the disjoint LinUCB of Li et al.), where the paper learns one θ shared by all arms
over arm-and-device features and weights each rating by its delay-dependent noise variance. To score the
arms of a round with their own contexts, the A_t context rows are passed at once and arm a's score is read
from row a's column a. Neither library takes a prior precision other than its ridge λ, which is set to δ.
Arm ids must be 0..arms−1.
"""

from __future__ import annotations

import numpy as np

from qoeflow.lifecycle.bandit import Policy, Rating

PEERS = ("contextualbandits", "mabwiser")


class _Peer(Policy):
    def __init__(self, arms: int, seed: int):
        self.arms = int(arms)
        self.rng = np.random.default_rng(seed)
        self.fitted = False

    def _columns(self, arms: np.ndarray) -> np.ndarray:
        ids = np.asarray(arms, int)
        if ids.min() < 0 or ids.max() >= self.arms:
            raise ValueError(f"arm ids must lie in 0..{self.arms - 1}, got {ids.tolist()}")
        return ids

    def choose(self, contexts: np.ndarray, arms: np.ndarray) -> int:
        ids = self._columns(arms)
        if not self.fitted:
            return int(self.rng.integers(len(contexts)))
        return int(np.argmax(self._scores(np.asarray(contexts, float), ids)))

    def _scores(self, contexts: np.ndarray, ids: np.ndarray) -> np.ndarray:
        raise NotImplementedError


class ContextualBanditsLinUCB(_Peer):
    """`contextualbandits.online.LinUCB` (Sherman–Morrison updates, no intercept)."""

    name = "contextualbandits"

    def __init__(self, arms: int, *, alpha: float = 1.5, delta: float = 0.1, seed: int = 0):
        from contextualbandits.online import LinUCB

        super().__init__(arms, seed)
        self.model = LinUCB(nchoices=self.arms, alpha=alpha, lambda_=delta, fit_intercept=False, use_float=False,
                            method="sm", random_state=seed + 1)  # it refuses a seed of 0

    def _scores(self, contexts: np.ndarray, ids: np.ndarray) -> np.ndarray:
        return self.model.decision_function(contexts)[np.arange(len(ids)), ids]

    def update(self, rating: Rating) -> None:
        x = np.asarray(rating.context, float)[None, :]
        self.model.partial_fit(x, np.array([rating.arm]), np.array([rating.reward]))
        self.fitted = True


class MabwiserLinUCB(_Peer):
    """`mabwiser`'s `LearningPolicy.LinUCB`; it must be fitted once before it predicts."""

    name = "mabwiser"

    def __init__(self, arms: int, *, alpha: float = 1.5, delta: float = 0.1, seed: int = 0):
        from mabwiser.mab import MAB, LearningPolicy

        super().__init__(arms, seed)
        self.model = MAB(list(range(self.arms)), LearningPolicy.LinUCB(alpha=alpha, l2_lambda=delta), seed=seed)

    def _scores(self, contexts: np.ndarray, ids: np.ndarray) -> np.ndarray:
        rows = self.model.predict_expectations(contexts)
        rows = rows if isinstance(rows, list) else [rows]
        return np.array([row[int(a)] for row, a in zip(rows, ids)])

    def update(self, rating: Rating) -> None:
        x = np.asarray(rating.context, float)[None, :]
        fit = self.model.partial_fit if self.fitted else self.model.fit
        fit([rating.arm], [rating.reward], x)
        self.fitted = True


def make(name: str, arms: int, *, alpha: float = 1.5, delta: float = 0.1, seed: int = 0) -> Policy:
    """A peer LinUCB by library name (one of PEERS)."""
    kinds = {"contextualbandits": ContextualBanditsLinUCB, "mabwiser": MabwiserLinUCB}
    if name not in kinds:
        raise ValueError(f"unknown peer {name!r}; known: {', '.join(PEERS)}")
    return kinds[name](arms, alpha=alpha, delta=delta, seed=seed)
