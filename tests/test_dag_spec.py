"""The DAG spec refuses bad DAGs before anything runs, naming the file, the stage and the reason."""

from __future__ import annotations

import textwrap

import pytest
import yaml

from qoeflow.dag.dvc_export import to_dvc
from conftest import REPO
from qoeflow.dag.spec import DagError, check_dag, load_dag, parse_dag, topological_order

TASKS = {"train": ((), ("curves", "jobs")), "report": (("curves", "jobs"), ("html",))}
PARAMS = {"train": {"jobs": [{"name": "a"}]}, "report": {"title": "t"}}

GOOD = """
name: demo
stages:
  train:
    task: train
    params: [train]
    foreach: train.jobs
    outs: {curves: data/t/curves.csv, jobs: data/t/jobs.json}
  report:
    task: report
    deps: [train]
    params: [report]
    outs: {html: data/r/index.html}
"""


def _dag(text: str = GOOD, path: str = "dags/demo.yaml"):
    return parse_dag(textwrap.dedent(text), path)


def _mutate(change) -> str:
    raw = yaml.safe_load(GOOD)
    change(raw)
    return yaml.safe_dump(raw)


def test_good_dag_orders_stages_and_passes_checks():
    dag = _dag()
    check_dag(dag, TASKS, PARAMS)
    assert dag.order() == ["train", "report"]
    assert dag.downstream("train") == {"report"}
    assert dag.stages["train"].resources.cpus == 1


def test_malformed_yaml_names_the_file():
    with pytest.raises(DagError, match=r"dags/bad.yaml: malformed YAML"):
        parse_dag("stages: [unclosed", "dags/bad.yaml")


def test_cycle_is_refused_with_its_path():
    text = _mutate(lambda r: r["stages"]["train"].__setitem__("deps", ["report"]))
    with pytest.raises(DagError, match=r"dags/demo.yaml: cycle between stages: (train -> report -> train|report -> train -> report)"):
        check_dag(_dag(text), TASKS, PARAMS)


def test_unknown_task_lists_the_known_ones():
    text = _mutate(lambda r: r["stages"]["report"].__setitem__("task", "nope"))
    with pytest.raises(DagError, match=r"stage 'report': unknown task 'nope' \(known: report, train\)"):
        check_dag(_dag(text), TASKS, PARAMS)


def test_missing_dependency_stage():
    text = _mutate(lambda r: r["stages"]["report"].__setitem__("deps", ["train", "ghost"]))
    with pytest.raises(DagError, match=r"stage 'report': depends on missing stage 'ghost'"):
        check_dag(_dag(text), TASKS, PARAMS)


def test_params_key_absent_from_params_yaml():
    text = _mutate(lambda r: r["stages"]["report"].__setitem__("params", ["report.colour"]))
    with pytest.raises(DagError, match=r"stage 'report': params key 'report.colour' is absent from params.yaml"):
        check_dag(_dag(text), TASKS, PARAMS)


def test_two_stages_writing_one_output():
    text = _mutate(lambda r: r["stages"]["report"]["outs"].__setitem__("html", "data/t/curves.csv"))
    with pytest.raises(DagError, match=r"stages '(train|report)' and '(report|train)' both write data/t/curves.csv"):
        check_dag(_dag(text), TASKS, PARAMS)


def test_unknown_keys_are_refused_with_the_stage():
    text = _mutate(lambda r: r["stages"]["train"].__setitem__("cpu", 2))
    with pytest.raises(DagError, match=r"dags/demo.yaml: stage 'train': cpu: unknown key"):
        _dag(text)


def test_outputs_must_live_under_data():
    text = _mutate(lambda r: r["stages"]["report"]["outs"].__setitem__("html", "/tmp/x.html"))
    with pytest.raises(DagError, match=r"must be a relative path under data/"):
        _dag(text)


def test_input_needs_a_providing_dependency():
    text = _mutate(lambda r: r["stages"]["report"].__setitem__("deps", []))
    with pytest.raises(DagError, match=r"stage 'report': task 'report' reads 'curves'"):
        check_dag(_dag(text), TASKS, PARAMS)


def test_undeclared_task_outputs_are_refused():
    text = _mutate(lambda r: r["stages"]["train"]["outs"].pop("jobs"))
    with pytest.raises(DagError, match=r"writes outputs \['jobs'\] that the stage does not declare"):
        check_dag(_dag(text), TASKS, PARAMS)


def test_resources_are_range_checked():
    text = _mutate(lambda r: r["stages"]["train"].__setitem__("resources", {"cpus": 0}))
    with pytest.raises(DagError, match=r"stage 'train': resources.cpus: Input should be greater than 0"):
        _dag(text)


def test_topological_order_is_stable_and_complete():
    order = topological_order({"a": [], "b": ["a"], "c": ["a"], "d": ["b", "c"]})
    assert order == ["a", "b", "c", "d"]


def test_dvc_export_commands_deps_params_and_outputs():
    dag = _dag()
    content = to_dvc(dag, {"train": ["tasks/train.py"], "report": ["tasks/report.py"]}, {"report": ["curves", "jobs"]})
    train, report = content["stages"]["train"], content["stages"]["report"]
    assert train["cmd"] == "qoeflow stage train --dag dags/demo.yaml"
    assert train["params"] == ["train"]
    assert report["deps"] == ["tasks/report.py", "data/t/curves.csv", "data/t/jobs.json"]
    assert report["outs"] == ["data/r/index.html"]
    assert "wdir" not in train


def test_dvc_export_in_a_subfolder_runs_from_the_root_and_tracks_overrides():
    raw = yaml.safe_load(GOOD)
    raw.update(dvc_dir="dags/demo", overrides={"report": {"title": "x"}})
    dag = _dag(yaml.safe_dump(raw))
    stage = to_dvc(dag, {}, {})["stages"]["report"]
    assert stage["wdir"] == "../.."
    assert "dags/demo.yaml" in stage["deps"]
    assert dag.dvc_file() == "dags/demo/dvc.yaml"


def test_upstream_lists_every_ancestor_nearest_first_once():
    dag = load_dag(REPO / "dags/lifecycle.yaml")
    assert dag.upstream("train") == []
    assert dag.upstream("allocate") == ["train", "forecast"]  # its deps, in their order; train only once
    video = dag.upstream("video")
    assert video[: len(dag.stages["video"].deps)] == dag.stages["video"].deps and len(set(video)) == len(video)
    assert set(video) == {name for name in dag.stages if "video" in dag.downstream(name)}
