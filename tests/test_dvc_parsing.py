"""DVC parses each YAML text once per process (flows/dvc_parsing.py), and still sees every change."""

from __future__ import annotations

import subprocess

import pytest
import yaml

from conftest import BIN, clean_env
from flows import dvc_parsing
from flows.bookkeeping import DvcBook
from qoeflow.dag.spec import Dag


def _counting_parser() -> tuple[list[str], object]:
    from dvc.utils.serialize import _yaml

    real = getattr(_yaml.parse_yaml, "__wrapped__", _yaml.parse_yaml)  # DVC's own, installed or not
    calls: list[str] = []

    def parse(text, path, typ="safe"):
        calls.append(typ)
        return real(text, path, typ)

    return calls, dvc_parsing.parsing_once(parse, kept=2)


def test_a_text_is_parsed_once_and_every_caller_gets_a_copy_of_its_own():
    calls, parse = _counting_parser()
    first = parse("stages: {make: {cmd: 'true', outs: [a, b]}}", "dvc.yaml")
    first["stages"]["make"]["outs"].append("mutated by DVC")
    second = parse("stages: {make: {cmd: 'true', outs: [a, b]}}", "dvc.yaml")
    assert second == {"stages": {"make": {"cmd": "true", "outs": ["a", "b"]}}}
    assert calls == ["safe"]
    assert parse("stages: {make: {cmd: 'false'}}", "dvc.yaml") == {"stages": {"make": {"cmd": "false"}}}
    assert calls == ["safe", "safe"], "a changed text is parsed anew"


def test_only_the_last_texts_are_kept_and_failures_and_round_trips_are_never_kept():
    from dvc.utils.serialize import YAMLFileCorruptedError

    calls, parse = _counting_parser()
    for text in ("a: 1", "a: 2", "a: 3", "a: 1"):
        parse(text, "x.yaml")
    assert len(calls) == 4, "kept=2: 'a: 1' was dropped when 'a: 3' came"
    for _ in range(2):
        with pytest.raises(YAMLFileCorruptedError):
            parse("a: [1, 2", "x.yaml")
        parse("a: 1", "x.yaml", typ="rt")
    assert calls[4:] == ["safe", "rt", "safe", "rt"]


def test_dvc_status_sees_each_change_of_dvc_yaml_and_of_the_output(tmp_path):
    project = tmp_path / "p"
    project.mkdir()
    subprocess.run([str(BIN / "dvc"), "init", "--no-scm", "-q"], cwd=project, check=True, env=clean_env())
    stages = {"stages": {"make": {"cmd": "true", "outs": ["data/out.txt"]}}}
    (project / "dvc.yaml").write_text(yaml.safe_dump(stages))
    (project / "data").mkdir()
    (project / "data/out.txt").write_text("made")
    dag = Dag(name="t", stages={"make": {"task": "make", "outs": {"out": "data/out.txt"}}})
    book = DvcBook(project, dag)
    from dvc.utils import strictyaml

    assert hasattr(strictyaml.parse_yaml, "__wrapped__"), "DvcBook routes DVC's parsing through the cache"

    book.commit("make")
    assert book.stale_reasons("make") == []
    stages["stages"]["make"]["cmd"] = "echo again"
    (project / "dvc.yaml").write_text(yaml.safe_dump(stages))
    assert any("changed command" in r for r in book.stale_reasons("make"))
    book.commit("make")
    assert book.stale_reasons("make") == []
    (project / "data/out.txt").write_text("made again")
    assert any("changed outs" in r for r in book.stale_reasons("make"))
