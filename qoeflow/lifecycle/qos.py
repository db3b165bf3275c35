"""QoS control with DMS (paper 002, §III-C.2, Fig. 8): per inference task, a PI controller turns the gap
between the latency measured in a monitoring period and the task's target into a change of DMS level.

Plain algorithm: no files, no threads, no clock. Every period the caller runs the task at `level`, measures
its latency and calls `step(latency_ms)`, which returns the level for the next period.

Where the paper is vague (it leaves the design to [29]–[31]), and what we chose:

- Error: relative, e = (measured − target) / target, so one set of gains serves any target; e > 0 (too slow)
  raises the level (fewer filters, faster).
- Velocity (incremental) form, Δu = kp·(e_k − e_{k−1}) + ki·e_k (e counted as 0 inside the dead band, below):
  the paper's controller outputs ΔDMS_level, and the accumulated position u is the level itself (before
  quantisation), so clamping u to [0, max_level] is the anti-windup: nothing integrates past a limit, and
  when the target becomes reachable again the level moves at the next period. A target change needs no
  bump handling either.
- Gains: the plant is static within a period (the level is constant while it is measured), so in level
  units the integral loop is x ← (1 − ki·g)·x for a plant whose latency falls by g·target per level:
  ki = speed/g removes the share `speed` of the level error each period. On a static plant the proportional
  term (on the error's change) mostly kicks back after each move, so it is kept small, kp = ki/6: a
  disturbance's onset gets that much more at once. Default speed 0.4: closed-loop roots 0.64 and −0.10; a
  linear plant settles in three to nine periods (slowest when the level below the answer is only just too
  slow: the integral then needs several periods to gather `rise`), and the loop stays stable while the true
  slope is up to 3.7× the assumed one (a disturbance steepens it). Faster
  loops settle sooner but turn measurement noise into level changes: on a busy 2-core CPU a period's median
  latency varies by a few percent, about one level's step. `Gains.for_step` assumes g = 0.05 by default;
  `Gains.from_table` measures it.
- Quantisation: levels are integers, and with integral action a target between two levels' latencies makes
  the level alternate between them forever. So (i) a dead band: a measured latency in
  [target·(1 − band), target] is on target and freezes the integral; with band = the relative latency step
  of one level the loop rests at the lowest level that meets the target; (ii) the level moves only the way
  the current error asks (so the proportional kick after a move never undoes it) and the position snaps to
  each new level; (iii) asymmetric thresholds: too slow, the level rises once the position is `rise` (0.3)
  above it, since missing the target is the failure; too fast, it falls only once the position is `fall`
  (0.7) below it, since a noisy period should not cost a level that meets the target.
- Saturation: at `max_level` and still too slow, or at level 0 and faster than the band, the step is
  `saturated`. After `patience` consecutive periods too slow at `max_level` the target is `unreachable`
  (with a `warning` to surface); the level stays at the maximum, and the flag clears at the first period
  on or under target.
"""

from __future__ import annotations

import math
import numbers
from dataclasses import dataclass, field
from typing import Sequence

DEFAULT_STEP = 0.05  # relative latency change per level the default gains assume
DEFAULT_SPEED = 0.4  # share of the level error the default gains remove per period


def _finite(value: object) -> bool:
    """A finite real number (numpy scalars included), not a bool."""
    return isinstance(value, numbers.Real) and not isinstance(value, bool) and math.isfinite(value)


def _check_nonnegative(what: str, value: float) -> None:
    if not _finite(value) or value < 0:
        raise ValueError(f"{what} must be a finite number ≥ 0, got {value!r}")


def check_target(target_ms: float) -> None:
    """Raise ValueError unless `target_ms` is a finite number > 0."""
    if not _finite(target_ms) or target_ms <= 0:
        raise ValueError(f"target_ms must be a finite number > 0, got {target_ms!r}")


def _check_int(what: str, value: int, low: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        raise ValueError(f"{what} must be an integer ≥ {low}, got {value!r}")


@dataclass(frozen=True)
class Gains:
    """Controller gains in levels per unit of relative error, and the dead band (relative, below target)."""

    kp: float
    ki: float
    band: float

    @classmethod
    def for_step(cls, step: float = DEFAULT_STEP, speed: float = DEFAULT_SPEED) -> Gains:
        """Gains for a plant whose latency falls by `step` × target per level, removing the share `speed` of
        the level error per period: ki = speed/step, kp = speed/6/step, band = step."""
        if not _finite(step) or step <= 0:
            raise ValueError(f"step must be a finite number > 0, got {step!r}")
        if not _finite(speed) or not 0 < speed <= 1:
            raise ValueError(f"speed must be a number in (0, 1], got {speed!r}")
        return cls(kp=speed / 6 / step, ki=speed / step, band=step)

    @classmethod
    def from_table(cls, latencies_ms: Sequence[float], target_ms: float, speed: float = DEFAULT_SPEED) -> Gains:
        """`for_step` of a measured level → latency table (index = level): the step is the least-squares
        slope per level over `target_ms` (robust to one noisy entry, where the widest gap between adjacent
        levels is not). Where adjacent steps are uneven, a target inside a gap wider than the band makes the
        level alternate between the two levels around it."""
        check_target(target_ms)
        table = list(latencies_ms)
        if len(table) < 2 or not all(_finite(v) and v >= 0 for v in table):
            raise ValueError(f"latencies_ms must hold ≥ 2 finite latencies ≥ 0 (one per level), got {table}")
        n = len(table)
        mean_level, mean_ms = (n - 1) / 2, sum(table) / n
        slope = (sum((k - mean_level) * (v - mean_ms) for k, v in enumerate(table))
                 / sum((k - mean_level) ** 2 for k in range(n)))
        if slope >= 0:
            raise ValueError(f"latency must fall with the level to be controlled, got slope {slope:+.4g} ms/level "
                             f"in {table}")
        return cls.for_step(-slope / target_ms, speed)


@dataclass(frozen=True)
class Step:
    """One monitoring period's decision: the measurement, the level for the next period and the flags."""

    latency_ms: float
    error: float  # (latency − target) / target
    level: int  # for the next period
    saturated: bool
    unreachable: bool
    warning: str | None


@dataclass
class PIController:
    """PI control of one task's DMS level (velocity form, see the module's docstring); `level` is the level
    to run now, `position` the integrator: an unquantised level in [0, max_level]."""

    target_ms: float
    max_level: int
    gains: Gains = field(default_factory=Gains.for_step)
    rise: float = 0.3  # too slow: the level rises once the position is this far above it
    fall: float = 0.7  # too fast: the level falls once the position is this far below it
    patience: int = 3  # periods too slow at max_level before the target is unreachable
    level: int = 0
    position: float = field(init=False)
    unreachable: bool = field(init=False, default=False)
    _last_error: float | None = field(init=False, default=None, repr=False)
    _stuck: int = field(init=False, default=0, repr=False)

    def __post_init__(self) -> None:
        check_target(self.target_ms)
        _check_int("max_level", self.max_level, 0)
        for what in ("kp", "ki", "band"):
            _check_nonnegative(f"gain {what}", getattr(self.gains, what))
        for what in ("rise", "fall"):
            value = getattr(self, what)
            _check_nonnegative(what, value)
            if value >= 1:
                raise ValueError(f"{what} must be < 1 (a level), got {value!r}")
        _check_int("patience", self.patience, 1)
        _check_int("level", self.level, 0)
        if self.level > self.max_level:
            raise ValueError(f"level must lie in 0..{self.max_level}, got {self.level}")
        self.position = float(self.level)

    @classmethod
    def from_table(cls, target_ms: float, latencies_ms: Sequence[float], speed: float = DEFAULT_SPEED,
                   **kwargs) -> PIController:
        """A controller for a plant with this measured level → latency table (max_level = its last level)."""
        return cls(target_ms, len(latencies_ms) - 1, Gains.from_table(latencies_ms, target_ms, speed), **kwargs)

    def _error(self, latency_ms: float) -> float:
        if not _finite(latency_ms) or latency_ms < 0:
            raise ValueError(f"measured latency must be a finite number ≥ 0 (ms), got {latency_ms!r}")
        return (latency_ms - self.target_ms) / self.target_ms

    def _quantise(self, error: float) -> None:
        """Move the level only the way the error asks: when too slow, up to the nearest level at or above
        position − rise; when faster than the band, down to the nearest level at or below position + fall.
        The position snaps to a new level."""
        if error > 0:
            level = max(self.level, math.ceil(self.position - self.rise))
        elif error < -self.gains.band:
            level = min(self.level, math.floor(self.position + self.fall))
        else:
            return
        if level != self.level:
            self.level, self.position = level, float(level)

    def step(self, latency_ms: float) -> Step:
        """Take the latency measured at `level` over the last period; move to the next period's level."""
        error = self._error(latency_ms)
        on_target = -self.gains.band <= error <= 0
        acting = 0.0 if on_target else error
        previous = acting if self._last_error is None else self._last_error
        delta = self.gains.kp * (acting - previous) + self.gains.ki * acting
        self._last_error = acting
        self.position = min(float(self.max_level), max(0.0, self.position + delta))  # anti-windup: clamp
        too_slow_at_max = self.level == self.max_level and error > 0
        saturated = too_slow_at_max or (self.level == 0 and error < -self.gains.band)
        self._stuck = self._stuck + 1 if too_slow_at_max else 0
        self.unreachable = self._stuck >= self.patience
        warning = (f"target {self.target_ms:.4g} ms unreachable: {latency_ms:.4g} ms at the highest DMS level "
                   f"{self.max_level} for {self._stuck} periods") if self.unreachable else None
        self._quantise(error)
        return Step(float(latency_ms), error, self.level, saturated, self.unreachable, warning)
