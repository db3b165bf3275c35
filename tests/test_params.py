"""params.yaml is validated with messages that name the key; overrides merge as documented."""

from __future__ import annotations

from pathlib import Path

import pytest

from qoeflow.params import ParamsError, apply_set, check_chosen_jobs, deep_merge, effective_tree, read_params_file, validate_params

REPO = Path(__file__).resolve().parents[1]


def _tree() -> dict:
    return read_params_file(REPO / "params.yaml")


def test_shipped_params_are_valid():
    params = validate_params(_tree())
    assert len(params.train.jobs) >= 8
    assert {j.task for j in params.train.jobs} == {"digits", "crowd", "sprites"}
    assert set(params.compress.jobs) <= {j.name for j in params.train.jobs}


def test_negative_epochs_names_the_key_and_the_rule():
    tree = apply_set(_tree(), "train.jobs.0.epochs=-3")
    with pytest.raises(ParamsError, match=r"params.yaml: train.jobs.0.epochs: Input should be greater than 0 \(got -3\)"):
        validate_params(tree)


def test_wrong_type_is_refused():
    tree = apply_set(_tree(), "train.jobs.1.lr=fast")
    with pytest.raises(ParamsError, match=r"train.jobs.1.lr: Input should be a valid number"):
        validate_params(tree)


def test_unknown_model_lists_the_allowed_ones():
    tree = apply_set(_tree(), "train.jobs.0.model=transformer")
    with pytest.raises(ParamsError, match=r"unknown model 'transformer' for task 'digits' \(allowed: .*mlp"):
        validate_params(tree)


def test_unknown_key_is_refused():
    tree = apply_set(_tree(), "train.warmup=3")
    with pytest.raises(ParamsError, match=r"train.warmup: unknown key"):
        validate_params(tree)


def test_set_refuses_paths_that_do_not_exist():
    with pytest.raises(ParamsError, match=r"index '99' out of range"):
        apply_set(_tree(), "train.jobs.99.epochs=3")
    with pytest.raises(ParamsError, match=r"expected KEY=VALUE"):
        apply_set(_tree(), "train.jobs.0.epochs")


def test_deep_merge_merges_mappings_and_replaces_lists():
    merged = deep_merge({"a": {"x": 1, "y": 2}, "l": [1, 2]}, {"a": {"y": 3}, "l": [9]})
    assert merged == {"a": {"x": 1, "y": 3}, "l": [9]}


def test_effective_tree_applies_overrides_then_sets(tmp_path):
    path = tmp_path / "params.yaml"
    path.write_text("train:\n  t_test_repeats: 5\n  threads_per_job: 1\n")
    tree = effective_tree(path, {"train": {"t_test_repeats": 2}}, ["train.threads_per_job=4"])
    assert tree["train"] == {"t_test_repeats": 2, "threads_per_job": 4}


def test_duplicate_job_names_are_refused():
    tree = apply_set(_tree(), "train.jobs.1.name=digits-mlp")
    with pytest.raises(ParamsError, match=r"job names must be unique; repeated: \['digits-mlp'\]"):
        validate_params(tree)


def test_a_section_check_names_the_key_and_value_not_the_section():
    tree = apply_set(_tree(), "train.jobs.1.name=digits-mlp")
    with pytest.raises(ParamsError) as err:
        validate_params(tree)
    message = str(err.value)
    assert message == "params.yaml: train: job names must be unique; repeated: ['digits-mlp']"


def test_compress_takes_trained_jobs_and_checks_its_ranges():
    import flows  # noqa: F401  registers the stages whose code lives in flows/
    from tasks.runner import load_project

    with pytest.raises(ParamsError, match=r"compress.jobs.1: 'digits-cnn' is not a training job \(train.jobs: digits-mlp, "):
        load_project(REPO, "dags/lifecycle.yaml", sets=["compress.jobs=[digits-vgg, digits-cnn]"])
    # only the sections a DAG's stages read are checked: a DAG without `compress` may train fewer jobs
    fewer = validate_params(apply_set(_tree(), "train.jobs=[{name: a, task: digits, model: vgg, epochs: 3}]"))
    check_chosen_jobs(fewer, ["train", "forecast"])
    with pytest.raises(ParamsError, match=r"multiexit.jobs.0: 'digits-resnet' is not a training job \(train.jobs: a\)"):
        check_chosen_jobs(fewer, ["multiexit"])
    for key, value, rule in [("compress.tucker.variance", "1.5", "less than or equal to 1"),
                             ("compress.tucker.variance", "0", "greater than 0"),
                             ("compress.dpruner.threshold", "1", "less than 1"),
                             ("compress.dpruner.threshold", "0", "greater than 0")]:
        with pytest.raises(ParamsError, match=rf"{key}: Input should be {rule} \(got {value}"):
            validate_params(apply_set(_tree(), f"{key}={value}"))


def test_families_come_from_the_registry():
    from qoeflow.families import FAMILIES
    from qoeflow.models import MODELS

    assert {name: f.models for name, f in FAMILIES.items()} == MODELS  # the registry's names are the zoo's
    tree = apply_set(_tree(), "train.jobs.0.task=imagenet")
    with pytest.raises(ParamsError, match=r"train.jobs.0.task: Input should be 'digits', 'crowd' or 'sprites'"):
        validate_params(tree)
    tree = apply_set(_tree(), "qoe.metrics.digits=[mae]")
    with pytest.raises(ParamsError, match=r"metrics.digits: \['mae'\] are not digits metrics \(allowed: accuracy, error\)"):
        validate_params(tree)


def test_validating_params_and_checking_a_dag_do_not_import_torch():
    import subprocess
    import sys

    code = ("import sys; from qoeflow.cli import main; assert main(['dag', 'check']) == 0; "
            "assert 'torch' not in sys.modules, 'torch was imported'")
    result = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr


def test_video_clips_and_k_are_checked_by_key():
    with pytest.raises(ParamsError, match=r"video.k_max: Input should be greater than or equal to 1 \(got 0\)"):
        validate_params(apply_set(_tree(), "video.k_max=0"))
    tree = _tree()
    tree["video"]["clips"][1]["name"] = tree["video"]["clips"][0]["name"]
    with pytest.raises(ParamsError, match=r"video: .*clips: names must be unique"):
        validate_params(tree)
    tree = _tree()
    tree["video"]["clips"][0]["classes"] = [3, 12]
    with pytest.raises(ParamsError, match=r"video.clips.0: .*classes must be distinct digits 0-9"):
        validate_params(tree)
