"""Learning-curve forecasting: extrapolate a metric observed for the first epochs to later epochs.

Every method works in a normalised frame: the curve is flipped so that it falls (``direction``
"up" metrics such as accuracy are negated), scaled to [0, 1] over the observed prefix, and epochs
are divided by the last observed epoch. From 2 observed points on (``MIN_POINTS``). Methods:

- ``last``: the mean of the last few observed values; band from the point-to-point noise plus the
  recent slope times the log of the extrapolation distance.
- ``parametric``: an ensemble of saturating learning-curve families (pow3, pow4, exp3, Weibull/
  Janoschek, MMF, ilog2) fitted by robust least squares; members are weighted by how well they
  predict the held-back trailing quarter of the prefix, then refitted on the whole prefix. Band:
  member spread plus residual noise, widening with the extrapolation distance. With 2 points no
  family fits: a log-linear line through them, floored one observed range below the best value.
- ``lstm``: DeepNetQoE §III-B, a two-layer LSTM with ReLU and dropout trained on sliding windows
  of the prefix (predicting the next value as a residual over the last one), rolled out step by
  step to the horizon with dropout on (Monte-Carlo dropout): the prediction is the mean of the
  rollouts, the band their 5-95 % range plus the training residual noise.
- ``combo``: the mean of ``parametric`` and ``last`` (a damped extrapolation that halves the
  predicted further improvement); it hedges against over-confident fits of noisy prefixes.
- ``auto``: a rolling-origin backtest on the prefix: cut it at ``origins`` points (the earliest
  leaving a tail as long, relative to what it observes, as the request), forecast each cut's later
  points no further away than the request is, and average each candidate's absolute error over the
  cuts. ``parametric`` (the best single method on benchmarks/results/forecasting.md) is kept unless
  another candidate halves its error (``AUTO_MARGIN``: single prefixes are noisy); with fewer than
  ``AUTO_MIN_POINTS`` points auto is ``parametric``. ``lstm`` is not a candidate: it never won and
  costs several parametric fits. ``Forecast.info["backtest_mae"]`` holds the scores.

Bands claim a level (``level``, 80 % by default, in ``Forecast.info["level"]``). Each method's raw
half-width is calibrated conformal-style on the same rolling-origin backtest: the `level` quantile
of the held-back residuals in units of the half-width, shrunk towards a per-method prior
(``BAND_PRIOR``) by the number of cuts; with 2 points (no cut) the prior alone, so bands are wide.
Predictions and bands are clipped to ``bounds`` (the metric's range), inside the backtest too.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Iterable

import numpy as np
from scipy.optimize import least_squares

METHODS = ("last", "parametric", "lstm", "combo", "auto")
AUTO_CANDIDATES = ("last", "parametric", "combo")  # lstm never won on benchmarks/results/forecasting.md
AUTO_DEFAULT = "parametric"  # auto's pick without a backtest, and unless another is clearly better
AUTO_MARGIN = 0.5  # another candidate must halve the default's backtest error to be picked
AUTO_MIN_POINTS = 5  # fewer observed points: too few cuts to choose by, auto takes the default
MIN_POINTS = 2
DEFAULT_LEVEL = 0.8  # the share of future values the band claims to hold
DEFAULT_ORIGINS = 4  # cut points of the rolling-origin backtest on the prefix
HALF_FLOOR = 1e-3  # smallest half-width (normalised units) when scaling residuals
PRIOR_WEIGHT = 1.0  # the band prior counts as this many cuts
BAND_PRIOR = {"last": 1.0, "parametric": 1.0, "combo": 0.8, "lstm": 1.0}  # factor on each half-width at 80 %


@dataclass(frozen=True)
class Forecast:
    """A predicted curve at `epochs` with a band `lower <= predicted <= upper`."""

    epochs: np.ndarray
    predicted: np.ndarray
    lower: np.ndarray
    upper: np.ndarray
    method: str
    info: dict = field(default_factory=dict)


@dataclass(frozen=True)
class _Frame:
    """Maps epochs to t = (epoch + off) / scale and values to a falling z in [0, 1]."""

    sign: float
    lo: float
    rng: float
    off: float
    scale: float

    def t(self, epochs: np.ndarray) -> np.ndarray:
        return (np.asarray(epochs, float) + self.off) / self.scale

    def z(self, y: np.ndarray) -> np.ndarray:
        return (self.sign * np.asarray(y, float) - self.lo) / self.rng

    def y(self, z: np.ndarray) -> np.ndarray:
        return self.sign * (np.asarray(z, float) * self.rng + self.lo)


def infer_direction(values: np.ndarray) -> str:
    """'down' if the last quarter of the curve is below its first quarter (on average), else 'up'."""
    k = max(1, len(values) // 4)
    return "down" if np.mean(values[-k:]) <= np.mean(values[:k]) else "up"


def _frame(epochs: np.ndarray, values: np.ndarray, direction: str) -> _Frame:
    sign = 1.0 if direction == "down" else -1.0
    s = sign * values
    rng = float(s.max() - s.min()) or max(1.0, float(abs(s).max()))
    off = max(0.0, 1.0 - float(epochs[0]))
    return _Frame(sign, float(s.min()), rng, off, float(epochs[-1]) + off)


def _noise(z: np.ndarray) -> float:
    """Robust point-noise estimate from first differences (insensitive to a smooth trend)."""
    if len(z) < 3:
        return 0.0
    d = np.diff(z)
    return float(1.4826 * np.median(np.abs(d - np.median(d))) / np.sqrt(2.0))


# ----------------------------------------------------------------------------- parametric families
# Each family falls from above towards its asymptote c as t grows; t is in units of the last epoch.
_Family = tuple[Callable[..., np.ndarray], list[float], list[float], Callable[[float, float], list[list[float]]]]


def _starts_pow(t0: float, z0: float, extra: list[float] = ()) -> list[list[float]]:
    return [[c, (z0 - c) * t0**al, *extra, al] for c, al in ((0.0, 0.5), (-0.5, 0.2))]


FAMILIES: dict[str, _Family] = {
    "pow3": (lambda t, c, a, al: c + a * t**-al, [-1, 0, 1e-3], [1.5, 1e4, 4],
             lambda t0, z0: _starts_pow(t0, z0)),
    "pow4": (lambda t, c, a, b, al: c + a * (t + b) ** -al, [-1, 0, 0, 1e-3], [1.5, 1e4, 10, 4],
             lambda t0, z0: _starts_pow(t0, z0, [0.0])),
    "exp3": (lambda t, c, a, b: c + a * np.exp(-b * t), [-1, 0, 1e-3], [1.5, 1e4, 1e3],
             lambda t0, z0: [[0.0, 2.0, 3.0], [-0.3, 1.5, 1.0]]),
    "weibull": (lambda t, c, a, b, d: c + a * np.exp(-((b * t) ** d)), [-1, 0, 1e-3, 0.05], [1.5, 1e4, 1e3, 5],
                lambda t0, z0: [[0.0, 1.5, 3.0, 0.7], [-0.3, 2.0, 1.0, 0.5]]),
    "mmf": (lambda t, c, a, b, d: c + a / (1 + (b * t) ** d), [-1, 0, 1e-3, 0.05], [1.5, 1e4, 1e4, 5],
            lambda t0, z0: [[0.0, 1.5, 5.0, 1.0], [-0.3, 2.0, 1.0, 0.5]]),
    "ilog2": (lambda t, c, a, b: c + a / np.log(b * t + np.e), [-1, 0, 1e-3], [1.5, 1e4, 1e4],
              lambda t0, z0: [[-0.5, 2.0, 10.0 / t0], [-1.0, 3.0, 1.0 / t0]]),
}


def _eval(name: str, p: np.ndarray, t: np.ndarray) -> np.ndarray:
    with np.errstate(all="ignore"):
        return np.asarray(FAMILIES[name][0](t, *p), float)


def _fit(name: str, t: np.ndarray, z: np.ndarray, fscale: float) -> np.ndarray | None:
    """Best robust least-squares fit of one family over its starting points, or None."""
    _, lb, ub, starts = FAMILIES[name]
    lb, ub = np.asarray(lb, float), np.asarray(ub, float)

    def resid(p: np.ndarray) -> np.ndarray:
        return np.nan_to_num(_eval(name, p, t) - z, nan=1e6, posinf=1e6, neginf=-1e6)

    best = None
    for x0 in starts(float(t[0]), float(z[0])):
        x0 = np.clip(np.asarray(x0, float), lb + 1e-9 * (ub - lb), ub - 1e-9 * (ub - lb))
        try:
            r = least_squares(resid, x0, bounds=(lb, ub), loss="soft_l1", f_scale=fscale, max_nfev=120)
        except (ValueError, FloatingPointError, np.linalg.LinAlgError):
            continue
        if np.isfinite(r.cost) and (best is None or r.cost < best.cost):
            best = r
    return None if best is None else best.x


def _fit_all(t: np.ndarray, z: np.ndarray, fscale: float) -> dict[str, np.ndarray]:
    """Fits of every family that can be fitted to the points (at most one parameter per point)."""
    out = {}
    for name, fam in FAMILIES.items():
        if len(fam[1]) <= len(t) and (p := _fit(name, t, z, fscale)) is not None:
            out[name] = p
    return out


def _sane(pred: np.ndarray) -> bool:
    return bool(np.all(np.isfinite(pred)) and np.all(np.abs(pred) < 1e3))


def _parametric(t: np.ndarray, z: np.ndarray, th: np.ndarray) -> tuple[np.ndarray, np.ndarray, dict] | None:
    """Weighted ensemble forecast in the normalised frame: (prediction, half-width, weights).

    The held-back tail is as long, relative to the prefix, as the requested extrapolation
    (between a fifth and a half of the points); weights are 1 / (excess tail MSE + its noise).
    """
    n, sigma = len(t), _noise(z)
    fscale = max(sigma, 1e-3)
    full = {k: p for k, p in _fit_all(t, z, fscale).items() if _sane(_eval(k, p, np.concatenate([t, th])))}
    if not full:
        if n < 2:
            return None
        pred = _loglin(t, z, th)
        return pred, np.abs(pred - z[-1]) + 2.0 * sigma, {"weights": {"loglin": 1.0}}
    ratio = max(float(th.max()) - 1.0, 0.0) if len(th) else 0.25
    h = max(1, int(round(n * float(np.clip(ratio / (1.0 + ratio), 0.2, 0.5)))))
    score = {k: 1.0 for k in full}
    if n - h >= 4:
        for k, p in _fit_all(t[:-h], z[:-h], fscale).items():
            if k in full:
                err = _eval(k, p, t[-h:]) - z[-h:]
                score[k] = float(np.mean(err**2)) if _sane(err) else np.inf
        floor = sigma**2 / h + 1e-8
        score = {k: 1.0 / (max(s - sigma**2, 0.0) + floor) for k, s in score.items() if np.isfinite(s)}
        score = score or {k: 1.0 for k in full}
    total = sum(score.values())
    w = {k: s / total for k, s in score.items()}
    preds = np.array([_eval(k, full[k], th) for k in w])
    fit = np.sum([wk * _eval(k, full[k], t) for k, wk in w.items()], axis=0)
    ww = np.array(list(w.values()))[:, None]
    pred = np.sum(ww * preds, axis=0)
    spread = np.sqrt(np.sum(ww * (preds - pred) ** 2, axis=0))
    res = _robust_std(z - fit)
    half = 2.0 * np.sqrt(spread**2 + res**2 * (1.0 + np.maximum(th - 1.0, 0.0)))
    if n <= 4:  # (nearly) exact fits carry no residual: at least half the predicted change is uncertain
        half = np.maximum(half, 0.5 * np.abs(pred - z[-1]))
    return pred, half, {"weights": w}


def _robust_std(r: np.ndarray) -> float:
    return float(1.4826 * np.median(np.abs(r - np.median(r))))


def _last(t: np.ndarray, z: np.ndarray, th: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean of the last few points; the band grows with the recent slope times the log-distance.

    (a power-law curve falling at slope s at t=1 falls at most s·log(t) further by t)."""
    k, m = max(1, min(5, len(z) // 5)), max(3, len(z) // 5)
    sigma = max(_noise(z[-20:]), float(np.std(z[-k:])))
    slope = abs(float(np.polyfit(t[-m:], z[-m:], 1)[0]))
    if len(z) == 2:  # the secant of a convex curve is about twice its slope at the end
        slope *= 0.5
    dist = np.log(np.maximum(th, t[-1]) / t[-1])
    return np.full(len(th), float(np.mean(z[-k:]))), 2.0 * sigma + slope * t[-1] * dist


def _loglin(t: np.ndarray, z: np.ndarray, th: np.ndarray) -> np.ndarray:
    """Two-parameter fallback z = a - b·log t (the flat limit of a power law), floored at the
    families' lowest asymptote (-1: one observed range below the best value)."""
    b, a = np.polyfit(np.log(t), z, 1)
    return np.maximum(a + b * np.log(th), -1.0)


# ----------------------------------------------------------------------------------------- LSTM
def _lstm(t: np.ndarray, z: np.ndarray, th: np.ndarray, seed: int, hidden: int = 32, steps: int = 300,
          dropout: float = 0.1, samples: int = 24, max_rollout: int = 5000) -> tuple[np.ndarray, np.ndarray]:
    """Two-layer LSTM + ReLU + dropout on sliding windows of a regular grid; autoregressive rollout."""
    import torch
    from torch import nn

    dt = float(np.median(np.diff(t)))
    grid = np.arange(t[0], t[-1] + 0.5 * dt, dt)
    zg = np.interp(grid, t, z)
    w = int(min(12, max(2, len(zg) // 4)))

    class Net(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.lstm = nn.LSTM(1, hidden, num_layers=2, batch_first=True, dropout=dropout)
            self.head = nn.Sequential(nn.ReLU(), nn.Dropout(dropout), nn.Linear(hidden, 1))

        def forward(self, x: "torch.Tensor") -> "torch.Tensor":
            out, _ = self.lstm(x)
            return x[:, -1, :] + self.head(out[:, -1, :])  # next value as a residual over the last

    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # a tiny model: one thread is fastest and leaves the others free
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        series = torch.tensor(zg, dtype=torch.float32)
        if len(zg) > w:
            xs = series.unfold(0, w, 1)[:-1].unsqueeze(-1)
            ys = series[w:].unsqueeze(-1)
        else:  # too few points for one full window: left-pad with the first value
            xs = torch.cat([series[:1].repeat(w - len(zg) + 1), series[:-1]]).view(1, w, 1)
            ys = series[-1:].view(1, 1)
        if len(xs) > 128:
            idx = torch.linspace(0, len(xs) - 1, 128).round().long()
            xs, ys = xs[idx], ys[idx]
        net = Net()
        opt = torch.optim.Adam(net.parameters(), lr=1e-2)
        net.train()
        for _ in range(steps):
            opt.zero_grad()
            loss = torch.mean((net(xs) - ys) ** 2)
            loss.backward()
            opt.step()
        n_roll = int(min(max_rollout, max(0, np.ceil((th.max() - grid[-1]) / dt)))) if len(th) else 0
        with torch.no_grad():
            net.eval()
            resid = float(torch.sqrt(torch.mean((net(xs) - ys) ** 2)))
            net.train()  # Monte-Carlo dropout: the prediction is the mean of the stochastic rollouts
            mc = _rollout(net, series[-w:], n_roll, samples)
    torch.set_num_threads(threads)
    fut = grid[-1] + dt * np.arange(1, n_roll + 1)
    xg, pred = np.concatenate([grid, fut]), np.concatenate([zg, mc.mean(axis=0)])
    lo = np.concatenate([zg, np.quantile(mc, 0.05, axis=0)])
    hi = np.concatenate([zg, np.quantile(mc, 0.95, axis=0)])
    p = np.interp(th, xg, pred)
    half = np.maximum(np.abs(np.interp(th, xg, lo) - p), np.abs(np.interp(th, xg, hi) - p))
    return p, half + 2.0 * resid * (th > t[-1])


def _rollout(net, window, n: int, batch: int) -> np.ndarray:
    """Feed the last window, append each prediction, slide; returns (batch, n) predictions."""
    import torch

    x = window.view(1, -1, 1).repeat(batch, 1, 1)
    out = []
    for _ in range(n):
        nxt = net(x).clamp(-10.0, 10.0)
        out.append(nxt[:, 0])
        x = torch.cat([x[:, 1:], nxt.unsqueeze(1)], dim=1)
    return torch.stack(out, 1).numpy().astype(float) if out else np.zeros((batch, 0))


# ------------------------------------------------------------------------------------ public API
def _check(epochs: np.ndarray, values: np.ndarray, horizon: np.ndarray) -> tuple[np.ndarray, ...]:
    e, v, h = (np.asarray(a, float).ravel() for a in (epochs, values, horizon))
    if len(e) != len(v):
        raise ValueError(f"epochs ({len(e)}) and values ({len(v)}) differ in length")
    if len(v) < MIN_POINTS:
        raise ValueError(f"need at least {MIN_POINTS} observed points to forecast, got {len(v)}")
    for name, a in (("epochs", e), ("values", v), ("horizon", h)):
        if not np.all(np.isfinite(a)):
            raise ValueError(f"{name} contains NaN or infinite entries at positions {np.flatnonzero(~np.isfinite(a))[:10].tolist()}")
    if np.any(np.diff(e) <= 0):
        raise ValueError("epochs must be strictly increasing")
    return e, v, h


def _raw(methods: set[str], t: np.ndarray, z: np.ndarray, th: np.ndarray, seed: int) -> dict[str, tuple]:
    """Uncalibrated (prediction, half-width, method used, info) in the normalised frame, per method;
    ``parametric`` is fitted once and shared with ``combo``."""
    out: dict[str, tuple] = {}
    zl, hl = _last(t, z, th)
    par = _parametric(t, z, th) if methods & {"parametric", "combo"} else None
    for m in methods:
        if m == "last":
            out[m] = (zl, hl, "last", {})
        elif m == "lstm":
            zp, half = _lstm(t, z, th, seed)
            out[m] = (zp, half, "lstm", {})
        elif par is None:  # parametric/combo without any fit: fall back to last
            out[m] = (zl, hl, "last", {})
        elif m == "parametric":
            out[m] = (par[0], par[1], "parametric", par[2])
        else:  # combo
            zp = 0.5 * (par[0] + zl)
            out[m] = (zp, 0.5 * (par[1] + hl) + np.abs(par[0] - zl) / 2, "combo", par[2])
    return out


def _origins(e: np.ndarray, h: np.ndarray, count: int) -> list[int]:
    """Cut points k (observe the first k points) for the rolling-origin backtest on the prefix.

    The earliest cut leaves a tail as long, relative to what it observes, as the request
    (between a quarter and 60 % of the points); the others are spread up to the last point."""
    n = len(e)
    if n < MIN_POINTS + 1 or count < 1:
        return []
    span = e[-1] - e[0]
    ratio = max(float(h.max()) - e[-1], 0.0) / span if len(h) and span > 0 else 0.5
    first = int(round(n * float(np.clip(1.0 / (1.0 + ratio), 0.4, 0.75))))
    first = min(max(first, MIN_POINTS), n - 1)
    return sorted({int(k) for k in np.round(np.linspace(first, n - 1, count))})


def _rolling(e: np.ndarray, v: np.ndarray, h: np.ndarray, direction: str, methods: set[str], seed: int,
             count: int, bounds: tuple[float, float]) -> tuple[list[int], dict[str, list[float]], dict[str, list[np.ndarray]]]:
    """Backtest `methods` from each cut point of the prefix: per method, the mean absolute error
    over each cut's targets (raw units) and the residuals in units of the method's half-width.

    A cut's targets are the later points no further from it, relative to the points it observes,
    than the request is from the prefix (at least one point)."""
    cuts = _origins(e, h, count)
    errors: dict[str, list[float]] = {m: [] for m in methods}
    ratios: dict[str, list[np.ndarray]] = {m: [] for m in methods}
    span = e[-1] - e[0]
    ratio = max(float(h.max()) - e[-1], 0.0) / span if len(h) and span > 0 else np.inf
    for k in cuts:
        reach = e[k - 1] + max(ratio, 1e-9) * (e[k - 1] - e[0])
        idx = np.arange(k, len(e))
        idx = idx[(e[idx] <= reach + 1e-9) | (idx == k)]
        fr = _frame(e[:k], v[:k], direction)
        raw = _raw(methods, fr.t(e[:k]), fr.z(v[:k]), fr.t(e[idx]), seed)
        for m, (zp, half, *_rest) in raw.items():
            pred = np.clip(fr.y(np.nan_to_num(zp, nan=float(fr.z(v[k - 1])))), *bounds)
            errors[m].append(float(np.mean(np.abs(pred - v[idx]))))
            ratios[m].append(np.abs(v[idx] - pred) / (fr.rng * np.maximum(np.nan_to_num(np.abs(half), nan=0.0), HALF_FLOOR)))
    return cuts, errors, ratios


def _band_scale(method: str, ratios: list[np.ndarray], level: float) -> float:
    """Conformal-style factor on a method's half-width: the `level` quantile of the prefix
    backtest's scaled residuals, shrunk (in log space) towards the method's prior by the number of cuts."""
    prior = BAND_PRIOR.get(method, 1.0) * _level_factor(level)
    if not ratios:
        return prior
    r = np.concatenate(ratios)
    q = float(np.quantile(r, min(1.0, level * (len(r) + 1) / len(r)))) if len(r) else prior
    q = float(np.clip(q, 0.5 * prior, 20.0 * prior))  # cuts see short horizons only: never below half the prior
    m = len(ratios)
    return float(np.exp((m * np.log(max(q, 1e-6)) + PRIOR_WEIGHT * np.log(prior)) / (m + PRIOR_WEIGHT)))


def _level_factor(level: float) -> float:
    """Half-widths are built as about 80 % intervals; other levels scale by the normal quantile ratio."""
    from scipy.stats import norm

    return float(norm.ppf(0.5 + level / 2) / norm.ppf(0.9))


def _choose(errors: dict[str, list[float]], default: str) -> tuple[str, dict[str, float]]:
    """Lowest mean error over the cuts; the default wins unless another candidate's error is
    below (1 - AUTO_MARGIN) of the default's (single cuts are noisy, the default is the best bet)."""
    score = {m: float(np.mean(errs)) for m, errs in errors.items()}
    best = min(score, key=score.get)
    if default in score and score[best] > (1.0 - AUTO_MARGIN) * score[default]:
        best = default
    return best, score


def forecast_many(epochs: np.ndarray, values: np.ndarray, horizon: np.ndarray, methods: Iterable[str],
                  direction: str | None = None, seed: int = 0, candidates: tuple[str, ...] = AUTO_CANDIDATES,
                  level: float = DEFAULT_LEVEL, origins: int = DEFAULT_ORIGINS, calibrate: bool = True,
                  bounds: tuple[float, float] | None = None) -> dict[str, Forecast]:
    """`forecast` for several methods at once, sharing the fits and the rolling-origin backtest."""
    e, v, h = _check(epochs, values, horizon)
    methods = list(dict.fromkeys(methods))
    bad = [m for m in methods if m not in METHODS]
    if bad:
        raise ValueError(f"unknown forecasting method {bad[0]!r} (allowed: {', '.join(METHODS)})")
    if direction not in (None, "up", "down"):
        raise ValueError(f"direction must be 'up', 'down' or None, got {direction!r}")
    if not 0.0 < level < 1.0:
        raise ValueError(f"band level must be in (0, 1), got {level}")
    if "auto" in methods:
        bad = [c for c in candidates if c == "auto" or c not in METHODS]
        if bad or not candidates:
            raise ValueError(f"bad auto candidate {bad[0] if bad else None!r} (allowed: {', '.join(METHODS[:-1])})")
    direction = direction or infer_direction(v)
    bounds = (-np.inf, np.inf) if bounds is None else (float(bounds[0]), float(bounds[1]))
    fixed = {m for m in methods if m != "auto"}
    tested = (fixed if calibrate else set()) | (set(candidates) if "auto" in methods else set())
    cuts, errors, ratios = _rolling(e, v, h, direction, tested, seed, origins, bounds) if tested else ([], {}, {})
    chosen = None
    if "auto" in methods:
        if cuts and len(v) >= AUTO_MIN_POINTS:
            chosen, scores = _choose({c: errors[c] for c in candidates}, AUTO_DEFAULT if AUTO_DEFAULT in candidates else candidates[0])
        else:  # too short to backtest: the default
            chosen, scores = (AUTO_DEFAULT if AUTO_DEFAULT in candidates else candidates[0]), {}
    fr = _frame(e, v, direction)
    t, z, th = fr.t(e), fr.z(v), fr.t(h)
    raw = _raw(fixed | ({chosen} if chosen else set()), t, z, th, seed)
    out = {}
    for m in methods:
        base = chosen if m == "auto" else m
        zp, half, used, extra = raw[base]
        scale = _band_scale(base, ratios.get(base, []) if calibrate else [], level)
        info: dict = {"direction": direction, "level": level, "band_scale": scale, "cuts": cuts, **extra}
        if m == "auto":
            info["backtest_mae"] = {c: float(np.mean(errors[c])) for c in candidates} if cuts else {}
            info["backtest_score"] = scores
        elif cuts and calibrate:
            info["backtest_mae"] = {m: float(np.mean(errors[m]))}
        zp = np.nan_to_num(zp, nan=float(z[-1]))
        half = scale * np.abs(np.nan_to_num(half, nan=0.0, posinf=1e3))
        a, b, pred = (np.clip(fr.y(x), *bounds) for x in (zp - half, zp + half, zp))
        out[m] = Forecast(h, pred, np.minimum(np.minimum(a, b), pred), np.maximum(np.maximum(a, b), pred), used, info)
    return out


def forecast(epochs: np.ndarray, values: np.ndarray, horizon: np.ndarray, method: str = "auto",
             direction: str | None = None, seed: int = 0, candidates: tuple[str, ...] = AUTO_CANDIDATES,
             level: float = DEFAULT_LEVEL, origins: int = DEFAULT_ORIGINS, calibrate: bool = True,
             bounds: tuple[float, float] | None = None) -> Forecast:
    """Predict `values` at the `horizon` epochs from the observed (`epochs`, `values`) prefix, with a
    band meant to hold a share `level` of the values (``info["level"]``); predictions and bands are
    clipped to `bounds` (the metric's range), also inside auto's backtest."""
    if method not in METHODS:
        raise ValueError(f"unknown forecasting method {method!r} (allowed: {', '.join(METHODS)})")
    return forecast_many(epochs, values, horizon, [method], direction, seed, candidates, level, origins, calibrate,
                         bounds)[method]


def backtest(epochs: np.ndarray, values: np.ndarray, frac: float, method: str = "auto", **kwargs) -> Forecast:
    """Observe the first `frac` of the points (at least MIN_POINTS) and forecast the rest."""
    return backtest_many(epochs, values, frac, [method], **kwargs)[method]


def backtest_many(epochs: np.ndarray, values: np.ndarray, frac: float, methods: Iterable[str],
                  **kwargs) -> dict[str, Forecast]:
    """`backtest` for several methods at once (see `forecast_many`)."""
    e, v, _ = _check(epochs, values, np.zeros(0))
    if not 0.0 < frac < 1.0:
        raise ValueError(f"frac must be in (0, 1), got {frac}")
    k = max(MIN_POINTS, int(round(frac * len(v))))
    if k >= len(v):
        raise ValueError(f"frac {frac} of {len(v)} points leaves nothing to predict")
    return forecast_many(e[:k], v[:k], e[k:], methods, **kwargs)
