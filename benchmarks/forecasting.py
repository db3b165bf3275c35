"""Learning-curve forecasts on curves nobody here made (issue 11, item 4).

Curve sets, all made here without downloads:

- sklearn: test error against training-set size (``sklearn.model_selection.learning_curve``, 5 shuffle
  splits) of six classical learners on the bundled digits, breast-cancer and wine data;
- noisy: saturating curves (pow, exp, log families) with 4-10 % noise;
- plateau: curves that flatten within a few epochs, then only noise;
- overfit: validation losses that fall, then rise again within the observed half; overfit-late: the rise
  starts after it (no method that reads the prefix can see it coming);
- clean: our kind of curves (power laws, some rising accuracies), little noise;
- short-2 / short-4: 24-epoch curves observed for 2 (or 3-4) epochs, forecast to epoch 24;
- lifecycle <task> <metric>: a lifecycle run's own curves.csv when it exists (``--curves PATH``).

Each curve is observed for its first half (short sets: the first 2-4 points) and forecast to its end with
every method, with the shared fits of ``forecast_many``. Per set and method: MAE at the last epoch (the
planner's score) and over all held-back points, the ratio to ``last``, ``auto`` against the best single
method, and the share of held-back points inside the band (claimed level 80 %). Goals: auto within 10 % of
the best single method on every set and ≥ 30 % below ``last``; coverage within 70-90 % per method.
Also the cost of one forecast per method.

    python benchmarks/forecasting.py [--curves benchmarks/work/lifecycle/data/train/curves.csv] [--quick]

Writes benchmarks/results/forecasting.{md,json}.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from qoeflow.lifecycle.curves import AUTO_CANDIDATES, METHODS, forecast, forecast_many  # noqa: E402

RESULTS = ROOT / "benchmarks" / "results"
CACHE = ROOT / "benchmarks" / "work" / "forecasting" / "sklearn_curves.csv"
DEFAULT_CURVES = ROOT / "benchmarks" / "work" / "lifecycle" / "data" / "train" / "curves.csv"
SINGLE = [m for m in METHODS if m != "auto"]
Curve = tuple[str, np.ndarray, np.ndarray]  # name, epochs, values


# ------------------------------------------------------------------------------------- curve sets
def sklearn_curves(cache: Path | None = None) -> list[Curve]:
    """Test error against training-set size of classical learners on sklearn's bundled data sets
    (about a minute; kept in `cache` when given)."""
    if cache is not None and cache.exists():
        table = pd.read_csv(cache)  # catalog-ok: the benchmark's own cache
        return [(str(n), g["size"].to_numpy(float), g["error"].to_numpy(float)) for n, g in table.groupby("curve", sort=False)]
    from sklearn.datasets import load_breast_cancer, load_digits, load_wine
    from sklearn.ensemble import RandomForestClassifier
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import ShuffleSplit, learning_curve
    from sklearn.naive_bayes import GaussianNB
    from sklearn.neighbors import KNeighborsClassifier
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler
    from sklearn.svm import SVC
    from sklearn.tree import DecisionTreeClassifier

    learners = {
        "logreg": lambda: LogisticRegression(max_iter=300),
        "svc": lambda: SVC(),
        "knn": lambda: KNeighborsClassifier(5),
        "tree": lambda: DecisionTreeClassifier(random_state=0),
        "nb": lambda: GaussianNB(),
        "forest": lambda: RandomForestClassifier(n_estimators=20, random_state=0),
    }
    out = []
    for data_name, loader in (("digits", load_digits), ("cancer", load_breast_cancer), ("wine", load_wine)):
        x, y = loader(return_X_y=True)
        for name, make in learners.items():
            sizes, _, test = learning_curve(make_pipeline(StandardScaler(), make()), x, y,
                                            train_sizes=np.linspace(0.1, 1.0, 16),
                                            cv=ShuffleSplit(5, test_size=0.25, random_state=0), n_jobs=1)
            out.append((f"{data_name}-{name}", sizes.astype(float), 1.0 - test.mean(axis=1)))
    if cache is not None:
        cache.parent.mkdir(parents=True, exist_ok=True)
        pd.DataFrame([{"curve": n, "size": x, "error": y} for n, e, v in out for x, y in zip(e, v)]).to_csv(cache, index=False)
    return out


def _saturating(rng: np.random.Generator, e: np.ndarray) -> np.ndarray:
    kind = rng.integers(3)
    c, a = rng.uniform(0.05, 0.5), rng.uniform(0.5, 2.0)
    if kind == 0:
        return c + a * e ** -rng.uniform(0.3, 1.2)
    if kind == 1:
        return c + a * np.exp(-e / rng.uniform(3, 15))
    return c + a / np.log(rng.uniform(0.5, 3) * e + np.e)


def synthetic_sets(count: int, seed: int = 0) -> dict[str, list[Curve]]:
    """noisy, plateau, overfit (rising again from epoch 4-11), overfit-late (from epoch 15-22, after the
    observed half) and clean curves of 30 epochs; `count` curves each."""
    rng = np.random.default_rng(seed)
    e = np.arange(1, 31, dtype=float)
    sets: dict[str, list[Curve]] = {"noisy": [], "plateau": [], "overfit": [], "overfit-late": [], "clean": []}
    for i in range(count):
        base = _saturating(rng, e)
        sets["noisy"].append((f"noisy{i}", e, base + rng.normal(0, rng.uniform(0.04, 0.1) * np.ptp(base), len(e))))
        c, a, tau = rng.uniform(0.05, 0.5), rng.uniform(0.5, 2.0), rng.uniform(0.7, 2.5)
        plateau = c + a * np.exp(-(e - 1) / tau)
        sets["plateau"].append((f"plateau{i}", e, plateau + rng.normal(0, 0.01 * a, len(e))))
        for label, (lo, hi) in (("overfit", (4, 11)), ("overfit-late", (15, 22))):  # rise seen / not seen in the first half
            start = rng.uniform(lo, hi)
            rise = rng.uniform(0.3, 1.0) * np.ptp(base) * (np.maximum(e - start, 0.0) / (30 - start)) ** rng.uniform(1.0, 1.5)
            sets[label].append((f"{label}{i}", e, base + rise + rng.normal(0, 0.02 * np.ptp(base), len(e))))
        clean = 0.1 + rng.uniform(0.5, 3) * e ** -rng.uniform(0.3, 1.0)
        if i % 3 == 0:  # a rising accuracy
            clean = 1.0 - 0.9 * clean / clean[0]
        sets["clean"].append((f"clean{i}", e, clean + rng.normal(0, 0.005 * np.ptp(clean), len(e))))
    return sets


def short_curves(count: int, seed: int = 1) -> list[Curve]:
    """24-epoch curves (saturating, some plateauing) with mild noise; observed for 2-4 epochs."""
    rng = np.random.default_rng(seed)
    e = np.arange(1, 25, dtype=float)
    out = []
    for i in range(count):
        base = _saturating(rng, e) if i % 4 else 0.2 + np.exp(-(e - 1) / rng.uniform(1, 3))
        out.append((f"short{i}", e, base + rng.normal(0, 0.01 * np.ptp(base), len(e))))
    return out


def lifecycle_sets(path: Path) -> dict[str, tuple[list[Curve], tuple[float, float]]]:
    """The lifecycle run's own curves, one set per task and metric."""
    from qoeflow.families import FAMILIES, metric_range

    curves = pd.read_csv(path)  # catalog-ok: a benchmark input the user names
    sets = {}
    for task, fam in FAMILIES.items():
        part = curves[curves["task"] == task]
        for metric in fam.forecast_metrics:
            if metric not in part:
                continue
            rows = [(str(job), g["epoch"].to_numpy(float), g[metric].to_numpy(float))
                    for job, g in part.dropna(subset=[metric]).sort_values("epoch").groupby("job")]
            rows = [r for r in rows if len(r[1]) >= 6]
            if rows:
                sets[f"lifecycle {task} {metric}"] = (rows, metric_range(metric))
    return sets


# ------------------------------------------------------------------------------------- scoring
def score_set(curves: list[Curve], methods: list[str], observe: int | float, bounds: tuple[float, float],
              **kwargs) -> dict:
    """Backtest every curve with every method; per method the errors, coverage and chosen methods."""
    per = {m: {"last_abs": [], "mean_abs": [], "inside": [], "points": 0, "used": []} for m in methods}
    for _, e, v in curves:
        k = observe if isinstance(observe, int) else max(2, int(round(observe * len(v))))
        fs = forecast_many(e[:k], v[:k], e[k:], methods, bounds=bounds, **kwargs)
        for m, f in fs.items():
            actual = v[-len(f.epochs):]
            per[m]["last_abs"].append(abs(float(f.predicted[-1] - actual[-1])))
            per[m]["mean_abs"].append(float(np.mean(np.abs(f.predicted - actual))))
            per[m]["inside"].append(int(np.sum((actual >= f.lower) & (actual <= f.upper))))
            per[m]["points"] += len(actual)
            per[m]["used"].append(f.method)
    out = {}
    for m, r in per.items():
        out[m] = {"mae_last_epoch": float(np.mean(r["last_abs"])), "mae_all": float(np.mean(r["mean_abs"])),
                  "coverage": sum(r["inside"]) / r["points"], "used": {k: int(n) for k, n in pd.Series(r["used"]).value_counts().items()}}
    base = out["last"]["mae_last_epoch"]
    best = min((m for m in out if m in SINGLE), key=lambda m: out[m]["mae_last_epoch"])
    for m in out:
        out[m]["vs_last"] = out[m]["mae_last_epoch"] / base if base > 0 else float("nan")
    summary = {"curves": len(curves), "best_single": best, "methods": out}
    if "auto" in out:
        summary["auto_vs_best"] = out["auto"]["mae_last_epoch"] / out[best]["mae_last_epoch"]
    return summary


def timing(repeats: int) -> dict:
    """Seconds for one forecast per method: 12 observed epochs to 24, and 2 observed epochs to 24."""
    rng = np.random.default_rng(5)
    e = np.arange(1, 25, dtype=float)
    v = 0.2 + 2 * e**-0.6 + rng.normal(0, 0.01, len(e))
    out = {}
    for label, k in (("12 -> 24", 12), ("2 -> 24", 2)):
        out[label] = {}
        for m in METHODS:
            times = []
            for _ in range(repeats):
                start = time.perf_counter()
                forecast(e[:k], v[:k], e[k:], m)
                times.append(time.perf_counter() - start)
            out[label][m] = statistics.median(times)
    return out


def main() -> None:
    import torch

    torch.set_num_threads(1)
    parser = argparse.ArgumentParser()
    parser.add_argument("--curves", default=None, help=f"a lifecycle curves.csv (default {DEFAULT_CURVES.relative_to(ROOT)} if present)")
    parser.add_argument("--count", type=int, default=20, help="curves per synthetic set")
    parser.add_argument("--quick", action="store_true", help="no lstm, fewer curves (for tuning)")
    parser.add_argument("--origins", type=int, default=None, help="cut points of auto's backtest")
    args = parser.parse_args()
    methods = [m for m in METHODS if not (args.quick and m == "lstm")]
    count = 8 if args.quick else args.count
    kwargs = {} if args.origins is None else {"origins": args.origins}
    positive = (0.0, np.inf)
    sets: dict[str, tuple[list[Curve], int | float, tuple[float, float]]] = {"sklearn": (sklearn_curves(CACHE), 0.5, (0.0, 1.0))}
    for name, curves in synthetic_sets(count).items():
        sets[name] = (curves, 0.5, positive)
    short = short_curves(count)
    sets["short-2"] = (short, 2, positive)
    sets["short-4"] = (short, 4, positive)
    curves_path = Path(args.curves) if args.curves else DEFAULT_CURVES
    if curves_path.exists():
        for name, (curves, bounds) in lifecycle_sets(curves_path).items():
            sets[name] = (curves, 0.5, bounds)
    elif args.curves:
        parser.error(f"--curves {args.curves}: no such file")
    result = {"command": "python benchmarks/forecasting.py" + (f" --curves {args.curves}" if args.curves else "")
              + (f" --count {args.count}" if args.count != 20 else "") + (f" --origins {args.origins}" if args.origins else "")
              + (" --quick" if args.quick else ""), "level": 0.8, "auto_candidates": list(AUTO_CANDIDATES), "sets": {}}
    for name, (curves, observe, bounds) in sets.items():
        start = time.perf_counter()
        result["sets"][name] = score_set(curves, methods, observe, bounds, **kwargs)
        result["sets"][name]["observe"] = observe
        result["sets"][name]["seconds"] = time.perf_counter() - start
        s = result["sets"][name]
        print(f"{name:>28}: " + "  ".join(f"{m} {s['methods'][m]['mae_last_epoch']:.4g}/{s['methods'][m]['coverage']:.2f}"
                                         for m in methods) + f"  auto/best {s.get('auto_vs_best', float('nan')):.2f}"
              f"  ({s['seconds']:.0f} s)", flush=True)
    result["seconds_per_forecast"] = timing(1 if args.quick else 3)
    RESULTS.mkdir(parents=True, exist_ok=True)
    stem = "forecasting-quick" if args.quick else "forecasting"
    (RESULTS / f"{stem}.json").write_text(json.dumps(result, indent=2, default=float) + "\n")
    (RESULTS / f"{stem}.md").write_text(report(result, methods))
    print(report(result, methods))


def report(result: dict, methods: list[str]) -> str:
    lines = ["# Forecasting benchmark", "", f"Command: `{result['command']}`", "",
             "Each curve observed for its first half (short-N: its first N points, forecast to epoch 24), "
             "then forecast to its end. MAE at each curve's last epoch, mean over the set (ratio to `last`); "
             f"auto candidates {', '.join(result['auto_candidates'])}.", "",
             "## MAE at the last epoch (× last)", "",
             "| set | curves | " + " | ".join(methods) + " | best single | auto / best |",
             "| --- | --- |" + " --- |" * (len(methods) + 2)]
    for name, s in result["sets"].items():
        cells = [f"{s['methods'][m]['mae_last_epoch']:.4g} ({s['methods'][m]['vs_last']:.2f})" for m in methods]
        lines.append(f"| {name} | {s['curves']} | " + " | ".join(cells) + f" | {s['best_single']} | "
                     f"{s.get('auto_vs_best', float('nan')):.2f} |")
    lines += ["", "## MAE over all held-back points", "", "| set | " + " | ".join(methods) + " |",
              "| --- |" + " --- |" * len(methods)]
    for name, s in result["sets"].items():
        lines.append(f"| {name} | " + " | ".join(f"{s['methods'][m]['mae_all']:.4g}" for m in methods) + " |")
    lines += ["", f"## Share of held-back points inside the band (claimed {result['level']:.0%}; goal 70-90 %)", "",
              "| set | " + " | ".join(methods) + " |", "| --- |" + " --- |" * len(methods)]
    for name, s in result["sets"].items():
        lines.append(f"| {name} | " + " | ".join(f"{s['methods'][m]['coverage']:.0%}" for m in methods) + " |")
    pooled = {m: statistics.mean(s["methods"][m]["coverage"] for s in result["sets"].values()) for m in methods}
    lines.append("| mean over sets | " + " | ".join(f"{pooled[m]:.0%}" for m in methods) + " |")
    lines += ["", "## What auto chose (curves per method)", "", "| set | choices |", "| --- | --- |"]
    for name, s in result["sets"].items():
        used = s["methods"].get("auto", {}).get("used", {})
        lines.append(f"| {name} | " + (", ".join(f"{k} {int(n)}" for k, n in used.items()) or "–") + " |")
    lines += ["", "## Seconds per forecast (median; one curve, calibrated band)", "",
              "| observed -> to | " + " | ".join(METHODS) + " |", "| --- |" + " --- |" * len(METHODS)]
    for label, row in result["seconds_per_forecast"].items():
        lines.append(f"| {label} | " + " | ".join(f"{row[m]:.3f}" for m in METHODS) + " |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
