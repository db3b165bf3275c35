"""Stage `deploy`: which catalog variant each simulated device gets (paper 001), one `foreach` item per seed of
params `deploy.seeds`; the gather step combines the seeds into `bandit_summary.json` and its figure.

Per seed: a stream of devices and users over the variants of family `deploy.bandit.family`
(qoeflow/lifecycle/deployment.py), played by our delayed-feedback LinUCB, the Oracle that knows the expected
QoE's θ, Static (the best single variant in hindsight), uniform random and the peer LinUCBs of
`deploy.bandit.peers`, all on the same stream. Also `qoeflow bandit` (this simulation outside a run) and
`qoeflow bandit --paper` (Table II's synthetic setting, Fig. 3).
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable, Sequence

import pandas as pd

from tasks.context import StageContext, StageError


def arms_of(catalog: pd.DataFrame, family: str | None, label: str = "catalog") -> tuple[str, list]:
    """The family (`family`, or where None the one with the most variants) and its catalog variants as the
    simulator's `Variant`s; StageError naming the families there when `family` has none."""
    from qoeflow.lifecycle.deployment import Variant

    if family is None:
        family = str(catalog["family"].value_counts().index[0])
    rows = catalog[catalog["family"] == family]
    if rows.empty:
        known = ", ".join(sorted(catalog["family"].unique())) or "none"
        raise StageError(f"{label}: no variant of family '{family}' (deploy.bandit.family); families there: {known}")
    return family, [Variant(r.variant, r.accuracy, r.macs, r.params, r.n_layers, r.n_filters, r.latency_b1_ms,
                            r.size_bytes) for r in rows.itertuples()]


def simulate(catalog: pd.DataFrame, p, seed: int, progress: Callable[[str, int], None] | None = None) -> dict:
    """One seed of the deployment simulation with params `p` (deploy.bandit): `seed_record`'s figures."""
    import numpy as np

    from qoeflow.lifecycle import bandit_peers
    from qoeflow.lifecycle.bandit import DelayedLinUCB, Oracle, Uniform
    from qoeflow.lifecycle.bandit_sim import checkpoints, evaluate, seed_record
    from qoeflow.lifecycle.deployment import DeploymentStream, Population

    _, variants = arms_of(catalog, p.family)
    population = Population(**{k: tuple(v) if isinstance(v, list) else v for k, v in p.population.model_dump().items()})
    stream = DeploymentStream(variants, population, p.rounds, seed)
    ours = DelayedLinUCB(stream.dim, alpha=p.alpha, delta=p.delta, noise_variance=stream.noise_variance(p.mismatch),
                         seed=seed)
    policies = [ours, Oracle(stream.theta), Uniform(seed)]
    policies += [bandit_peers.make(name, len(variants), alpha=p.alpha, delta=p.delta, seed=seed) for name in p.peers]
    b, traces = evaluate(stream, policies, progress)
    record = seed_record(b, traces, checkpoints(p.rounds))
    return {"seed": seed, "methods": record, "theta": np.round(stream.theta, 5).tolist()}


def summarise(catalog: pd.DataFrame, p, records: Sequence[dict]) -> dict:
    """The seeds combined: per method normalised QoE, regret, seconds and curves; the variants' names and
    each method's most chosen variants; our θ̂ beside the Oracle's θ, feature by feature."""
    import numpy as np

    from qoeflow.lifecycle.bandit_sim import checkpoints, combine
    from qoeflow.lifecycle.deployment import FEATURES

    family, variants = arms_of(catalog, p.family)
    names = [v.name for v in variants]
    theta = np.array(records[0]["theta"])
    summary = combine([r["methods"] for r in records], checkpoints(p.rounds), theta)
    for entry in summary["methods"].values():
        shares = sorted(entry.pop("choices").items(), key=lambda kv: -kv[1])
        entry["top_choices"] = {names[int(a)]: round(s, 4) for a, s in shares[:5]}
    summary.update({"mode": "deployment", "family": family, "arms": names, "features": list(FEATURES),
                    "oracle_theta": theta.tolist(), "settings": p.model_dump(mode="json"),
                    "seed_list": [r["seed"] for r in records]})
    return summary


def run_seed(ctx: StageContext, seed: int) -> dict:
    """One seed's simulation; a small record for the gather step."""
    catalog = ctx.load("model_catalog")
    p = ctx.params.deploy.bandit
    total = 4 + len(p.peers)

    def progress(name: str, t: int) -> None:
        if ctx.progress:
            ctx.progress(str(seed), t, p.rounds, f"{name} round {t}/{p.rounds} (of {total} methods)")

    record = simulate(catalog, p, int(seed), progress)
    ours = record["methods"]["linucb"]
    ctx.log(f"deploy[{seed}]: linucb normalised QoE {ours['normalised_qoe']:.3f}, regret {ours['regret']:.1f}")
    return {"record": record, "notes": list(ctx.notes)}


def dms_model(catalog: pd.DataFrame, catalog_path: Path, root: Path, job: str | None):
    """The job (`job`, or where None the first of the catalog with DMS variants), the shared DMSNet of its DMS
    variants, its test accuracy per level and its family."""
    from qoeflow.models.variants import load_variant

    dms = catalog[catalog["method"] == "dms"]
    jobs = list(dict.fromkeys(dms["source_job"]))
    job = jobs[0] if job is None and jobs else job
    rows = dms[dms["source_job"] == job]
    if rows.empty:
        raise StageError(f"{catalog_path}: no DMS variant of job '{job}' (deploy.qos.job); jobs with DMS variants: "
                         f"{', '.join(jobs) or 'none'}")
    accuracy = {int(v.rsplit("-L", 1)[1]): float(a) for v, a in zip(rows["variant"], rows["accuracy"])}
    net = load_variant(rows["variant"].iloc[0], catalog_path, root).net
    return job, net, accuracy, rows["family"].iloc[0]


def control(ctx: StageContext, catalog: pd.DataFrame) -> None:
    """PI control of the DMS level for latency targets (paper 002 §IV-C): one task, then the tasks of
    `deploy.qos.targets` together, controlled and not; the summary and Figs. 11/13-like plots."""
    import torch

    from qoeflow.models import input_shape
    from qoeflow.models.qos_run import Disturbance, experiment, experiment_summary, plot_qos

    p = ctx.params.deploy.qos
    job, net, accuracy, family = dms_model(catalog, ctx.input("model_catalog"), ctx.root, p.job)
    x = torch.randn((p.batch, *input_shape(family)), generator=torch.Generator().manual_seed(0))
    ctx.log(f"deploy: DMS control of {job} ({net.levels} levels), {p.periods} periods × {p.inferences} inferences "
            f"of batch {p.batch} per task")
    if ctx.progress:
        ctx.progress("qos", 0, 1, f"{job}: {len(p.targets)} tasks, {p.periods} periods")
    result = experiment(net, p.targets, p.single, x, accuracy, periods=p.periods, inferences=p.inferences,
                        disturbance=Disturbance(threads=p.disturbance_threads), threads=p.threads, speed=p.speed)
    summary = experiment_summary(result, accuracy)
    summary.update({"job": job, "family": family, "settings": p.model_dump(mode="json"),
                    "device": "cpu", "torch_threads": p.threads})
    ctx.save("qos_summary", summary)
    records = result.records
    for (name, task), rows in records[records["unreachable"]].groupby(["experiment", "task"]):
        ctx.note(f"deploy: {name} task {task}: target {rows['target_ms'].iloc[0]:.3g} ms unreachable at the highest "
                 f"DMS level in {len(rows)} of {p.periods} periods (the controller held that level)")
    ctx.save("qos_single_figure", plot_qos(records[records["experiment"] == "single"].drop(columns="experiment")))
    ctx.save("qos_figure", plot_qos(records[records["experiment"] == "concurrent"].drop(columns="experiment")))
    if ctx.progress:
        ctx.progress("qos", 1, 1, f"done in {result.seconds:.0f} s")


def gather(ctx: StageContext, summaries: list[dict]) -> dict:
    """The bandit summary and figure from every seed; then, the seeds done and the machine quiet, DMS control."""
    from qoeflow.plots import bandit_figure

    records = [s["record"] for s in summaries if "record" in s]
    if not records:
        raise StageError(f"stage '{ctx.stage}': no seed finished")
    catalog = ctx.load("model_catalog")
    summary = summarise(catalog, ctx.params.deploy.bandit, records)
    ctx.save("bandit_summary", summary)
    ctx.save("bandit_figure", bandit_figure(summary, title(summary)))
    control(ctx, catalog)
    return {"outputs": ctx.publish(), "notes": ctx.notes}


def title(summary: dict) -> str:
    """The bandit figure's title for a summary of either mode."""
    if summary["mode"] == "paper":
        return "Paper 001, Table II setting"
    return f"Variants of {summary['family']} for simulated devices"


def write_summary(summary: dict, output: Path) -> None:
    """A bandit summary, checked, as `output`/summary.json and its figure as `output`/figure.png."""
    from qoeflow.plots import bandit_figure
    from tasks.catalog import kind_of

    output.mkdir(parents=True, exist_ok=True)
    kind_of("bandit_summary").save(summary, output / "summary.json", str(output / "summary.json"))
    kind_of("bandit_figure").save(bandit_figure(summary, title(summary)), output / "figure.png",
                                  str(output / "figure.png"))


def paper_command(seeds: int, output: Path, peers: Sequence[str]) -> dict:
    """`qoeflow bandit --paper`: Table II's simulation over `seeds` seeds, written to `output`."""
    from qoeflow.lifecycle.bandit_sim import PaperSetup, replicate_paper

    summary = replicate_paper(PaperSetup(), range(seeds), peers,
                              progress=lambda done, total: print(f"seed {done}/{total}", flush=True))
    summary["mode"] = "paper"
    write_summary(summary, output)
    return summary


def catalog_command(catalog: pd.DataFrame, p, seeds: int, output: Path) -> dict:
    """`qoeflow bandit`: the stage's simulation (params `p`, deploy.bandit) over seeds 0..`seeds`−1 of
    `catalog`, one after another in this process, written to `output`."""
    records = []
    for seed in range(seeds):
        print(f"seed {seed + 1}/{seeds}", flush=True)
        records.append(simulate(catalog, p, seed))
    summary = summarise(catalog, p, records)
    write_summary(summary, output)
    return summary
