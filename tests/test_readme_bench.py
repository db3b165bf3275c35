"""The README's `make bench` paragraph names exactly the scripts the Makefile's `bench` target runs, and each
of them exists."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_make_bench_runs_the_scripts_the_readme_names():
    makefile = (ROOT / "Makefile").read_text()
    recipe = re.search(r"^bench:.*\n((?:\t.*\n)+)", makefile, re.MULTILINE).group(1)
    run = re.findall(r"benchmarks/\w+\.py", recipe)
    readme = (ROOT / "README.md").read_text()
    paragraph = readme[readme.index("`make bench` runs"):].split("\n\n")[0]
    named = re.findall(r"`(benchmarks/\w+\.py)`", paragraph)
    assert named == run
    assert all((ROOT / script).is_file() for script in run)
