"""Great Expectations suites for qoeflow's tables (JSON documents have pydantic models: schemas.py).

Each `check_*` function takes the table as a DataFrame and a label (the file it came from) and raises
`ArtifactError` naming the file, the column and the offending rows. The artifact catalog
(tasks/catalog.py) calls them when a stage writes a table and when one reads it. Metric columns and
their ranges come from the task family registry. great_expectations is imported lazily: it costs seconds.
"""

from __future__ import annotations

import logging
import os
import uuid
from functools import lru_cache
from typing import Any, Iterable

import pandas as pd

from qoeflow.families import FAMILIES, metric_range, metrics_of

JOB_STATUSES = ("completed", "diverged")
CURVE_COLUMNS = ["job", "task", "model", "epoch", "train_loss", "val_loss", "epoch_seconds", "cumulative_seconds"]
_HUGE = 1e12  # "finite": GE's between-check flags inf as out of range


class ArtifactError(ValueError):
    """An artifact that fails its expectations."""


@lru_cache(maxsize=1)
def _context():
    os.environ.setdefault("GX_ANALYTICS_ENABLED", "false")
    logging.getLogger("great_expectations").setLevel(logging.ERROR)
    import great_expectations as gx

    context = gx.get_context(mode="ephemeral")
    try:
        context.variables.progress_bars = {"globally": False, "metric_calculations": False}
    except Exception:  # older config models: progress bars are cosmetic
        pass
    return context


def _validate(name: str, df: pd.DataFrame, suite, result_format: dict):
    """Validate a DataFrame against a suite. Each call uses a fresh asset: GE caches metrics per batch
    id, and a reused asset would answer for a previous DataFrame."""
    context = _context()
    try:
        source = context.data_sources.get("qoeflow")
    except Exception:
        source = context.data_sources.add_pandas("qoeflow")
    asset_name = f"{name}-{uuid.uuid4().hex}"
    asset = source.add_dataframe_asset(asset_name)
    try:
        batch = asset.add_batch_definition_whole_dataframe("whole").get_batch(batch_parameters={"dataframe": df})
        return batch.validate(suite, result_format=result_format)
    finally:
        source.delete_asset(asset_name)


def _problems(name: str, df: pd.DataFrame, expectations: Iterable[Any], index_cols: list[str]) -> list[str]:
    import great_expectations as gx

    _context()  # suites need an active context
    suite = gx.ExpectationSuite(name=f"{name}-suite")
    for exp in expectations:
        suite.add_expectation(exp)
    result = _validate(name, df.reset_index(drop=True), suite,
                       {"result_format": "COMPLETE", "unexpected_index_column_names": index_cols})
    problems: list[str] = []
    for r in result.results:
        if r.success:
            continue
        cfg = r.expectation_config
        column = cfg.kwargs.get("column") or " ≥ ".join(cfg.kwargs[k] for k in ("column_A", "column_B") if k in cfg.kwargs)
        shown = column.replace("_epoch_step", "epoch (contiguous from 1 per job)")
        rule = {k: v for k, v in cfg.kwargs.items() if k in ("min_value", "max_value", "value_set", "strict_min")}
        rows = (r.result or {}).get("unexpected_index_list") or []
        rendered = ", ".join(
            "{" + ", ".join(f"{k}={v}" for k, v in row.items()) + "}" for row in rows[:10]
        ) + (f" … (+{len(rows) - 10} more)" if len(rows) > 10 else "")
        problems.append(f"column '{shown}': {cfg.type} {rule or ''} failed on {len(rows)} row(s): {rendered or 'column missing'}")
    return problems


def _require_columns(df: pd.DataFrame, columns: list[str], label: str) -> None:
    missing = [c for c in columns if c not in df.columns]
    if missing:
        raise ArtifactError(f"{label}: missing column(s) {missing} (has {list(df.columns)})")


def _in_range(gxe, column: str, metric: str | None = None):
    """The column's values lie in the range of `metric` (default: the column's own name) per the registry."""
    low, high = metric_range(metric or column)
    return gxe.ExpectColumnValuesToBeBetween(column=column, min_value=low, max_value=min(high, _HUGE))


def _raise(label: str, problems: list[str]) -> None:
    if problems:
        raise ArtifactError(f"{label}: " + "; ".join(problems))


def _start(df: pd.DataFrame, columns: list[str], label: str):
    import great_expectations.expectations as gxe

    if not isinstance(df, pd.DataFrame):
        raise ArtifactError(f"{label}: expected a table, got {type(df).__name__}")
    _require_columns(df, columns, label)
    if df.empty:
        raise ArtifactError(f"{label}: no rows")
    return gxe


def _known(df: pd.DataFrame, column: str, allowed, label: str) -> None:
    bad = sorted(set(df[column].astype(str)) - set(allowed))
    if bad:
        raise ArtifactError(f"{label}: column '{column}': unknown value(s) {bad} (allowed: {sorted(allowed)})")


def check_curves(df: pd.DataFrame, label: str = "curves.csv") -> None:
    """Per-epoch training curves: no nulls, epochs contiguous from 1 per job, finite losses ≥ 0,
    seconds > 0, each family's metrics present and in their range."""
    gxe = _start(df, CURVE_COLUMNS, label)
    _known(df, "task", FAMILIES, label)
    problems: list[str] = []
    for task, rows in df.groupby("task", sort=True):
        metrics = metrics_of(str(task))
        _require_columns(rows, metrics, label)
        frame = rows[CURVE_COLUMNS + metrics].copy()
        frame["_epoch_step"] = frame["epoch"] - frame.groupby("job")["epoch"].shift(1).fillna(0)
        exps: list[Any] = [gxe.ExpectColumnValuesToNotBeNull(column=c) for c in CURVE_COLUMNS + metrics]
        exps.append(gxe.ExpectColumnValuesToBeInSet(column="_epoch_step", value_set=[1]))
        exps += [_in_range(gxe, c) for c in ("train_loss", "val_loss", *metrics)]
        exps += [
            gxe.ExpectColumnValuesToBeBetween(column=c, min_value=0, max_value=_HUGE, strict_min=True)
            for c in ("epoch_seconds", "cumulative_seconds")
        ]
        problems += _problems(f"curves-{task}", frame, exps, ["job", "epoch"])
    _raise(label, problems)


def _prediction_checks(gxe, df: pd.DataFrame, values: list[str], index: list[str], name: str) -> list[str]:
    """No nulls; the predicted values within their metric's range; lower ≤ predicted ≤ upper."""
    from qoeflow.lifecycle.curves import METHODS

    problems: list[str] = []
    for metric, rows in df.groupby("metric", sort=True):
        exps: list[Any] = [gxe.ExpectColumnValuesToNotBeNull(column=c) for c in df.columns]
        exps += [_in_range(gxe, c, str(metric)) for c in values]
        exps.append(gxe.ExpectColumnValuesToBeBetween(column="epoch", min_value=1, max_value=_HUGE))
        exps.append(gxe.ExpectColumnValuesToBeInSet(column="method", value_set=list(METHODS)))
        exps.append(gxe.ExpectColumnPairValuesAToBeGreaterThanB(column_A="predicted", column_B="lower", or_equal=True))
        exps.append(gxe.ExpectColumnPairValuesAToBeGreaterThanB(column_A="upper", column_B="predicted", or_equal=True))
        problems += _problems(f"{name}-{metric}", rows.reset_index(drop=True), exps, index)
    return problems


def check_forecasts(df: pd.DataFrame, label: str = "forecasts.csv") -> None:
    """Forecast curves: predictions and bands finite, within the metric's range, bands around predictions."""
    from qoeflow.lifecycle.forecasting import FORECAST_COLUMNS

    gxe = _start(df, FORECAST_COLUMNS, label)
    _raise(label, _prediction_checks(gxe, df[FORECAST_COLUMNS], ["predicted", "lower", "upper"],
                                     ["job", "metric", "epoch"], "forecasts"))


def check_backtest(df: pd.DataFrame, label: str = "backtest.csv") -> None:
    """Backtest predictions beside the actual values: all finite and within the metric's range. Empty (with
    its columns) when no curve of the run is long enough to backtest."""
    from qoeflow.lifecycle.forecasting import BACKTEST_COLUMNS

    if isinstance(df, pd.DataFrame) and df.empty:
        _require_columns(df, BACKTEST_COLUMNS, label)
        return
    gxe = _start(df, BACKTEST_COLUMNS, label)
    _raise(label, _prediction_checks(gxe, df[BACKTEST_COLUMNS], ["actual", "predicted", "lower", "upper"],
                                     ["job", "metric", "method", "epoch"], "backtest"))


PLAN_COLUMNS = ["job", "task", "method", "planned_epochs", "replanned_epochs", "epochs_done", "status",
                "planned_seconds", "actual_seconds", "predicted_qoe", "replanned_qoe", "realised_qoe"]


def check_plan_vs_actual(df: pd.DataFrame, label: str = "plan_vs_actual.csv") -> None:
    """Plan against reality per job: known task, method and status; epochs and seconds sane; QoE in (0, 1];
    the planned and realised metrics within their ranges (realised QoE is empty for a diverged job)."""
    from qoeflow.lifecycle.allocation import METHODS

    gxe = _start(df, PLAN_COLUMNS, label)
    exps: list[Any] = [gxe.ExpectColumnValuesToNotBeNull(column=c) for c in PLAN_COLUMNS if c != "realised_qoe"]
    exps.append(gxe.ExpectColumnValuesToBeInSet(column="task", value_set=list(FAMILIES)))
    exps.append(gxe.ExpectColumnValuesToBeInSet(column="method", value_set=list(METHODS)))
    exps.append(gxe.ExpectColumnValuesToBeInSet(column="status", value_set=list(JOB_STATUSES)))
    exps += [gxe.ExpectColumnValuesToBeBetween(column=c, min_value=1, max_value=_HUGE)
             for c in ("planned_epochs", "replanned_epochs")]
    exps += [gxe.ExpectColumnValuesToBeBetween(column=c, min_value=0, max_value=_HUGE)
             for c in ("epochs_done", "planned_seconds", "actual_seconds")]
    exps += [gxe.ExpectColumnValuesToBeBetween(column=c, min_value=0, max_value=1, strict_min=True)
             for c in ("predicted_qoe", "replanned_qoe", "realised_qoe")]
    exps += [_in_range(gxe, c, c.split("_", 1)[1]) for c in df.columns if c.startswith(("actual_", "predicted_"))
             and c.split("_", 1)[1] not in ("seconds", "qoe")]
    _raise(label, _problems("plan_vs_actual", df, exps, ["job"]))


MODEL_CATALOG_COLUMNS = ["variant", "family", "source_job", "method", "accuracy", "params", "macs", "size_bytes",
                         "latency_b1_ms", "latency_b64_ms", "n_layers", "n_filters", "path", "device"]


def check_model_catalog(df: pd.DataFrame, label: str = "catalog.csv") -> None:
    """The model catalog: one row per variant, unique names; known family; accuracy in [0, 1]; sizes,
    MACs and latencies positive and finite; a model file path per row."""
    gxe = _start(df, MODEL_CATALOG_COLUMNS, label)
    exps: list[Any] = [gxe.ExpectColumnValuesToNotBeNull(column=c) for c in MODEL_CATALOG_COLUMNS]
    exps.append(gxe.ExpectColumnValuesToBeUnique(column="variant"))
    exps.append(gxe.ExpectColumnValuesToBeInSet(column="family", value_set=list(FAMILIES)))
    exps.append(gxe.ExpectColumnValuesToBeBetween(column="accuracy", min_value=0, max_value=1))
    exps += [gxe.ExpectColumnValuesToBeBetween(column=c, min_value=0, max_value=_HUGE, strict_min=True)
             for c in ("params", "macs", "size_bytes", "latency_b1_ms", "latency_b64_ms", "n_layers", "n_filters")]
    _raise(label, _problems("model_catalog", df[MODEL_CATALOG_COLUMNS], exps, ["variant"]))


BENCH_COLUMNS = ["variant", "family", "method", "macs", "precision", "batch", "p50_ms", "p90_ms", "p99_ms",
                 "throughput", "calls", "peak_memory_bytes", "accuracy", "pareto", "device", "device_type", "torch",
                 "threads", "cuda", "cudnn"]


CACHE_FIGURES = ["hit_rate", "latency_ms", "latency_cut", "macs_skipped", "output_difference", "count_mae",
                 "precision", "recall"]
CACHING_COLUMNS = (["job", "model", "clip", "frames", "height", "width", "cached_convs", "grid", "bins", "threshold",
                    "pixel_threshold", "max_age", "prefix_mac_share", "full_latency_ms", "full_count_mae",
                    "full_jitter"]
                   + CACHE_FIGURES + [f"pixel_{f}" for f in CACHE_FIGURES] + ["device", "threads"])


def check_caching(df: pd.DataFrame, label: str = "caching.csv") -> None:
    """Convolutional caching, one row per job and clip: the histogram cache's figures and the pixel peer's
    (``pixel_``) beside full recomputation's; shares in [0, 1] (a latency cut or MACs skipped may be
    negative: caching that costs more than it saves); latencies and errors positive and finite. Precision is
    empty when a detector named no block, recall when no block truly changed; max_age when blocks never expire."""
    gxe = _start(df, CACHING_COLUMNS, label)
    optional = {"max_age", "precision", "recall", "pixel_precision", "pixel_recall"}
    exps: list[Any] = [gxe.ExpectColumnValuesToNotBeNull(column=c) for c in CACHING_COLUMNS if c not in optional]
    exps.append(gxe.ExpectCompoundColumnsToBeUnique(column_list=["job", "clip"]))
    shares = ["prefix_mac_share", "full_jitter"] + [p + f for p in ("", "pixel_")
                                     for f in ("hit_rate", "output_difference", "precision", "recall")]
    exps += [gxe.ExpectColumnValuesToBeBetween(column=c, min_value=0, max_value=1) for c in shares]
    exps += [gxe.ExpectColumnValuesToBeBetween(column=p + c, min_value=-_HUGE, max_value=1)
             for p in ("", "pixel_") for c in ("latency_cut", "macs_skipped")]
    exps += [gxe.ExpectColumnValuesToBeBetween(column=c, min_value=0, max_value=_HUGE, strict_min=True)
             for c in ("frames", "height", "width", "cached_convs", "bins", "full_latency_ms", "latency_ms",
                       "pixel_latency_ms", "threads")]
    exps += [gxe.ExpectColumnValuesToBeBetween(column=c, min_value=0, max_value=_HUGE)
             for c in ("full_count_mae", "count_mae", "pixel_count_mae")]
    _raise(label, _problems("caching", df[CACHING_COLUMNS], exps, ["job", "clip"]))


def check_bench(df: pd.DataFrame, label: str = "bench.csv") -> None:
    """The inference benchmark: one row per variant × precision × batch; known family; latencies positive,
    finite and in order (p50 ≤ p90 ≤ p99); throughput, calls and memory positive; accuracy in [0, 1]."""
    gxe = _start(df, BENCH_COLUMNS, label)
    required = [c for c in BENCH_COLUMNS if c not in ("cuda", "cudnn")]  # CUDA versions: only on CUDA devices
    exps: list[Any] = [gxe.ExpectColumnValuesToNotBeNull(column=c) for c in required]
    exps.append(gxe.ExpectCompoundColumnsToBeUnique(column_list=["variant", "precision", "batch", "device"]))
    exps.append(gxe.ExpectColumnValuesToBeInSet(column="family", value_set=list(FAMILIES)))
    exps.append(gxe.ExpectColumnValuesToBeInSet(column="device_type", value_set=["cpu", "cuda"]))
    exps.append(gxe.ExpectColumnValuesToBeBetween(column="accuracy", min_value=0, max_value=1))
    exps += [gxe.ExpectColumnValuesToBeBetween(column=c, min_value=0, max_value=_HUGE, strict_min=True)
             for c in ("macs", "batch", "p50_ms", "throughput", "calls", "peak_memory_bytes", "threads")]
    exps.append(gxe.ExpectColumnPairValuesAToBeGreaterThanB(column_A="p90_ms", column_B="p50_ms", or_equal=True))
    exps.append(gxe.ExpectColumnPairValuesAToBeGreaterThanB(column_A="p99_ms", column_B="p90_ms", or_equal=True))
    exps.append(gxe.ExpectColumnValuesToBeInSet(column="pareto", value_set=[True, False]))
    _raise(label, _problems("bench", df[BENCH_COLUMNS], exps, ["variant", "precision", "batch"]))


VIDEO_METHODS = ("brute-force", "focus", "multi-exit")  # the video query workload's methods; the last two index
VIDEO_INGEST_COLUMNS = ["clip", "method", "frames", "objects", "sample_objects", "exits", "k", "sample_recall",
                        "labels_per_object", "macs_per_object", "indexed", "clusters", "detect_seconds",
                        "model_seconds", "cluster_seconds", "ingest_seconds_per_frame"]
VIDEO_QUERY_COLUMNS = ["clip", "class", "method", "precision", "recall", "truth_precision", "truth_recall",
                       "query_seconds", "gt_calls", "candidates", "frames_returned", "reference_frames",
                       "ingest_seconds_per_frame"]


def check_video_ingest(df: pd.DataFrame, label: str = "ingest.csv") -> None:
    """Video ingest, one row per clip and indexed method: k′ ≥ 1; recall in [0, 1]; counts and seconds ≥ 0."""
    gxe = _start(df, VIDEO_INGEST_COLUMNS, label)
    exps: list[Any] = [gxe.ExpectColumnValuesToNotBeNull(column=c) for c in VIDEO_INGEST_COLUMNS]
    exps.append(gxe.ExpectCompoundColumnsToBeUnique(column_list=["clip", "method"]))
    exps.append(gxe.ExpectColumnValuesToBeInSet(column="method", value_set=list(VIDEO_METHODS[1:])))
    exps.append(gxe.ExpectColumnValuesToBeBetween(column="sample_recall", min_value=0, max_value=1))
    exps.append(gxe.ExpectColumnValuesToBeBetween(column="k", min_value=1, max_value=_HUGE))
    exps += [gxe.ExpectColumnValuesToBeBetween(column=c, min_value=0, max_value=_HUGE)
             for c in VIDEO_INGEST_COLUMNS[2:] if c not in ("exits", "k", "sample_recall")]
    _raise(label, _problems("video_ingest", df[VIDEO_INGEST_COLUMNS], exps, ["clip", "method"]))


def check_video_queries(df: pd.DataFrame, label: str = "queries.csv") -> None:
    """The video query workload, one row per clip, class and method: known method; precision and recall in
    [0, 1]; seconds, calls and counts ≥ 0; class a digit."""
    gxe = _start(df, VIDEO_QUERY_COLUMNS, label)
    exps: list[Any] = [gxe.ExpectColumnValuesToNotBeNull(column=c) for c in VIDEO_QUERY_COLUMNS]
    exps.append(gxe.ExpectCompoundColumnsToBeUnique(column_list=["clip", "class", "method"]))
    exps.append(gxe.ExpectColumnValuesToBeInSet(column="method", value_set=list(VIDEO_METHODS)))
    exps.append(gxe.ExpectColumnValuesToBeBetween(column="class", min_value=0, max_value=9))
    exps += [gxe.ExpectColumnValuesToBeBetween(column=c, min_value=0, max_value=1)
             for c in ("precision", "recall", "truth_precision", "truth_recall")]
    exps += [gxe.ExpectColumnValuesToBeBetween(column=c, min_value=0, max_value=_HUGE)
             for c in ("query_seconds", "gt_calls", "candidates", "frames_returned", "reference_frames",
                       "ingest_seconds_per_frame")]
    _raise(label, _problems("video_queries", df[VIDEO_QUERY_COLUMNS], exps, ["clip", "class", "method"]))


BANDIT_COLUMNS = ["method", "normalised_qoe", "regret", "seconds"]


def bandit_methods(doc: dict) -> pd.DataFrame:
    """A bandit summary's methods as a table: mean normalised QoE, regret and seconds over seeds."""
    return pd.DataFrame([{"method": name, **{k: m[k]["mean"] for k in BANDIT_COLUMNS[1:]}}
                         for name, m in doc["methods"].items()], columns=BANDIT_COLUMNS)


def check_bandit_summary(doc: dict, label: str = "bandit_summary.json") -> None:
    """Per method (means over seeds): unique names, finite figures, seconds ≥ 0, and the Oracle at exactly 1
    with no regret (every method is normalised against it)."""
    df = bandit_methods(doc)
    gxe = _start(df, BANDIT_COLUMNS, label)
    exps: list[Any] = [gxe.ExpectColumnValuesToNotBeNull(column=c) for c in BANDIT_COLUMNS]
    exps.append(gxe.ExpectColumnValuesToBeUnique(column="method"))
    exps.append(gxe.ExpectColumnValuesToBeBetween(column="seconds", min_value=0, max_value=_HUGE))
    exps += [gxe.ExpectColumnValuesToBeBetween(column=c, min_value=-_HUGE, max_value=_HUGE)
             for c in ("normalised_qoe", "regret")]
    _raise(label, _problems("bandit_summary", df, exps, ["method"]))
    oracle = df[df["method"] == "oracle"]
    if oracle.empty or abs(float(oracle["normalised_qoe"].iloc[0]) - 1) > 1e-9 or abs(float(oracle["regret"].iloc[0])) > 1e-9:
        raise ArtifactError(f"{label}: the oracle must score normalised QoE 1 with no regret, got "
                            f"{oracle[['normalised_qoe', 'regret']].to_dict('records')}")


QOS_COLUMNS = ["experiment", "task", "mode", "phase", "periods", "within_10", "in_reach", "abs_error_rel", "accuracy",
               "level"]


def qos_rows(doc: dict) -> pd.DataFrame:
    """A QoS summary as a table: one row per experiment, task, mode and phase."""
    return pd.DataFrame([{"experiment": e, "task": t, "mode": m, "phase": ph, **{c: f[c] for c in QOS_COLUMNS[4:]}}
                         for e, tasks in doc["experiments"].items() for t, info in tasks.items()
                         for m in ("controlled", "uncontrolled") for ph, f in info[m].items()], columns=QOS_COLUMNS)


def check_qos_summary(doc: dict, label: str = "qos_summary.json") -> None:
    """Every experiment, task, mode and phase once; shares within 10 % and in reach, and accuracies in [0, 1];
    errors and levels ≥ 0; at least one period each; the uncontrolled runs stay at level 0."""
    df = qos_rows(doc)
    gxe = _start(df, QOS_COLUMNS, label)
    exps: list[Any] = [gxe.ExpectColumnValuesToNotBeNull(column=c) for c in QOS_COLUMNS]
    exps.append(gxe.ExpectCompoundColumnsToBeUnique(column_list=["experiment", "task", "mode", "phase"]))
    exps += [gxe.ExpectColumnValuesToBeBetween(column=c, min_value=0, max_value=1)
             for c in ("within_10", "in_reach", "accuracy")]
    exps += [gxe.ExpectColumnValuesToBeBetween(column=c, min_value=0, max_value=_HUGE) for c in ("abs_error_rel", "level")]
    exps.append(gxe.ExpectColumnValuesToBeBetween(column="periods", min_value=1, max_value=_HUGE))
    _raise(label, _problems("qos_summary", df, exps, ["experiment", "task", "mode", "phase"]))
    moved = df[(df["mode"] == "uncontrolled") & (df["level"] != 0)]
    if not moved.empty:
        raise ArtifactError(f"{label}: uncontrolled runs must stay at level 0, got {moved.to_dict('records')}")
