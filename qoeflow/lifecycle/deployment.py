"""A simulated population of devices and users asking for one of the catalog's model variants (paper 001's
realistic setting): the reward stream of the `deploy` stage.

Each round one device arrives with a CPU speed (relative to the machine that measured the catalog; log-normal),
a RAM size (drawn from a list) and an energy cost per MAC (log-normal), and its user weighs accuracy, latency
and energy by weights drawn from a Dirichlet. On that device variant a has

    latency = latency_b1_ms(a) / cpu,   energy = macs(a) / max macs · energy per MAC,
    QoE     = w_acc · accuracy(a) − w_lat · latency / latency budget − w_energy · energy,

and a variant is offered only if it fits in the device's memory share (`memory_share` · RAM): the arm set
changes from round to round. The engine sees a context per variant, features of the variant (accuracy, MACs,
parameters, layers, filters, each scaled by its catalog maximum) and of the pair (the latency predicted for the
device over the budget, the model size over the memory share), plus a constant 1. It does not see the user's
weights nor the device's energy cost: the QoE is linear in its features only on average over users, and the
rest is the paper's model mismatch. Ratings arrive 1..`max_delay` rounds late with noise of variance
`observation / delay²` (earlier ratings are noisier, as in the paper).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterator, Sequence

import numpy as np

from qoeflow.lifecycle.bandit_sim import Round, Stream

FEATURES = ("bias", "accuracy", "macs", "params", "layers", "filters", "device_latency", "memory_use")


@dataclass(frozen=True)
class Variant:
    """A catalog row as the simulator needs it."""

    name: str
    accuracy: float
    macs: float
    params: float
    n_layers: float
    n_filters: float
    latency_ms: float
    size_bytes: float

    def __post_init__(self) -> None:
        values = [self.accuracy, self.macs, self.params, self.n_layers, self.n_filters, self.latency_ms,
                  self.size_bytes]
        if not all(np.isfinite(values)) or min(values[1:]) <= 0 or not 0 <= self.accuracy <= 1:
            raise ValueError(f"variant {self.name!r}: accuracy must lie in [0, 1] and sizes, MACs and latency be "
                             f"positive and finite, got {values}")


@dataclass(frozen=True)
class Population:
    """How devices and users are drawn, and how their ratings come back."""

    cpu_median: float = 0.5  # device speed relative to the measuring machine, log-normal median
    cpu_sigma: float = 1.5
    ram_gb: tuple[float, ...] = (1.0, 2.0, 4.0, 8.0)  # drawn uniformly
    memory_share: float = 0.25  # of RAM, in MB, a model may take; scaled with `size_scale`
    size_scale: float = 1000.0  # catalog bytes × size_scale = the model's size on the devices
    energy_sigma: float = 0.5  # energy per MAC, log-normal around 1
    latency_budget_ms: float = 5.0  # the latency that costs a whole unit of QoE
    weights: tuple[float, float, float] = (6.0, 2.0, 1.0)  # Dirichlet over (accuracy, latency, energy)
    max_delay: int = 40
    observation: float = 0.5  # rating noise variance is observation / delay²

    def __post_init__(self) -> None:
        if self.cpu_median <= 0 or self.cpu_sigma < 0 or self.energy_sigma < 0 or self.latency_budget_ms <= 0:
            raise ValueError("cpu_median and latency_budget_ms must be positive, sigmas non-negative")
        if not self.ram_gb or min(self.ram_gb) <= 0 or not 0 < self.memory_share <= 1 or self.size_scale <= 0:
            raise ValueError("ram_gb must be positive, memory_share in (0, 1], size_scale positive")
        if len(self.weights) != 3 or min(self.weights) <= 0:
            raise ValueError("weights needs three positive values (accuracy, latency, energy)")
        if self.max_delay < 1 or self.observation < 0:
            raise ValueError("max_delay must be at least 1 and observation non-negative")


@dataclass
class DeploymentStream(Stream):
    """Rounds of devices and users asking for one of `variants`; replayable from its seed."""

    variants: Sequence[Variant]
    population: Population
    rounds: int
    seed: int = 0
    chunk: int = 512

    def __post_init__(self) -> None:
        if not self.variants:
            raise ValueError("the deployment simulation needs at least one variant")
        if self.rounds < 1:
            raise ValueError(f"rounds must be at least 1, got {self.rounds}")
        self.dim = len(FEATURES)
        v = self.variants
        self._accuracy = np.array([x.accuracy for x in v])
        self._latency = np.array([x.latency_ms for x in v])
        self._size_mb = np.array([x.size_bytes for x in v]) * self.population.size_scale / 2**20
        self._energy = np.array([x.macs for x in v]) / max(x.macs for x in v)
        fixed = np.array([[x.accuracy, x.macs, x.params, x.n_layers, x.n_filters] for x in v], float)
        self._fixed = fixed / np.maximum(fixed.max(axis=0), 1e-12)
        self._fixed[:, 0] = self._accuracy  # accuracy is a share already
        self._smallest = float(self._size_mb.min())

    def _draw(self, rng: np.random.Generator, n: int) -> tuple[np.ndarray, ...]:
        p = self.population
        cpu = p.cpu_median * np.exp(rng.normal(0.0, p.cpu_sigma, n))
        budget_mb = rng.choice(np.asarray(p.ram_gb, float), n) * 1024 * p.memory_share
        energy = np.exp(rng.normal(0.0, p.energy_sigma, n))
        weights = rng.dirichlet(p.weights, n)
        delays = rng.integers(1, p.max_delay + 1, n)
        noise = rng.normal(0.0, 1.0, n) * np.sqrt(p.observation) / delays
        return cpu, np.maximum(budget_mb, self._smallest), energy, weights, delays, noise

    def __iter__(self) -> Iterator[Round]:
        rng = np.random.default_rng(self.seed)
        arms = np.arange(len(self.variants))
        budget = self.population.latency_budget_ms
        for start in range(0, self.rounds, self.chunk):
            n = min(self.chunk, self.rounds - start)
            cpu, memory, energy, w, delays, noise = self._draw(rng, n)
            latency = self._latency[None, :] / cpu[:, None] / budget  # n × A, in budgets
            qoe = (w[:, :1] * self._accuracy[None, :] - w[:, 1:2] * latency
                   - w[:, 2:] * energy[:, None] * self._energy[None, :])
            memory_use = self._size_mb[None, :] / memory[:, None]
            contexts = np.concatenate([np.ones((n, len(arms), 1)), np.broadcast_to(self._fixed, (n, *self._fixed.shape)),
                                       latency[..., None], memory_use[..., None]], axis=2)
            fits = memory_use <= 1.0  # the smallest variant always fits (the budget is raised to it)
            for i in range(n):
                keep = fits[i]
                yield Round(contexts[i][keep], arms[keep], qoe[i][keep], float(noise[i]), int(delays[i]))

    @property
    def theta(self) -> np.ndarray:
        """The θ of the QoE's expectation over users and energy costs given the context: what paper 001's Oracle
        knows. Only accuracy, MACs and the device latency carry weight."""
        p = self.population
        w = np.asarray(p.weights, float) / sum(p.weights)
        theta = np.zeros(self.dim)
        theta[FEATURES.index("accuracy")] = w[0]
        theta[FEATURES.index("device_latency")] = -w[1]
        theta[FEATURES.index("macs")] = -w[2] * np.exp(p.energy_sigma**2 / 2)  # E[energy per MAC]
        return theta

    def noise_variance(self, mismatch: float):
        """The bandit's λ(d): `mismatch` (the QoE the linear model misses, a variance) plus the rating noise."""
        observation = self.population.observation
        return lambda delay: mismatch + observation / max(delay, 1) ** 2
