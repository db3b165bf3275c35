"""The artifact catalog: every artifact a stage reads or writes, declared once with its kind and schema.

Stages never open an artifact themselves: `ctx.load(name)` and `ctx.save(name, obj)` (tasks/context.py)
go through the kind declared here, which checks the schema both ways — a Great Expectations suite for
a table, a pydantic model for a JSON document, a decodable PNG for a figure, loadable torch files for
weights. Where an artifact lives comes from the DAG (`outs`), so the same catalog serves every DAG.
Adding a stage means declaring its artifacts here.
"""

from __future__ import annotations

import json
import math
import shutil
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Mapping

from pydantic import BaseModel

from qoeflow import schemas, validate
from qoeflow.validate import ArtifactError


@dataclass(frozen=True)
class Kind:
    """How one kind of artifact is written, read and checked. `folder`: the artifact is a directory."""

    description = "artifact"
    folder = False

    def _expect_shape(self, path: Path, label: str) -> None:
        if self.folder and not path.is_dir():
            raise ArtifactError(f"{label}: is a file; the catalog declares a {self.description}")
        if not self.folder and path.is_dir():
            raise ArtifactError(f"{label}: is a folder; the catalog declares a {self.description}")

    def load(self, path: Path, label: str, root: Path | None = None) -> Any:
        self._expect_shape(path, label)
        return self.read(path, label)

    def read(self, path: Path, label: str) -> Any:
        return path

    def save(self, obj: Any, tmp: Path, label: str, root: Path | None = None) -> None:
        raise ArtifactError(f"{label}: a {self.description} is written in place by its stage, not saved")


@dataclass(frozen=True)
class Table(Kind):
    """A CSV table checked by a Great Expectations suite; loads as a DataFrame."""

    check: Callable[[Any, str], None]
    description = "table (CSV)"

    def read(self, path: Path, label: str):
        import pandas as pd

        try:
            df = pd.read_csv(path)
        except (OSError, UnicodeDecodeError, pd.errors.ParserError, pd.errors.EmptyDataError) as exc:
            raise ArtifactError(f"{label}: cannot read as CSV: {exc}") from None
        self.check(df, label)
        return df

    def save(self, obj: Any, tmp: Path, label: str, root: Path | None = None) -> None:
        self.check(obj, label)
        obj.to_csv(tmp, index=False)


def _finite_json(value: Any) -> Any:
    """NaN and infinities as null: JSON has no such numbers."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, Mapping):
        return {k: _finite_json(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite_json(v) for v in value]
    return value


@dataclass(frozen=True)
class Document(Kind):
    """A JSON document checked by a pydantic model, and by `check` (Great Expectations on a table drawn from
    it) where given; loads as plain dicts and lists."""

    model: type[BaseModel]
    check: Callable[[Any, str], None] | None = None
    description = "JSON document"

    def _check(self, doc: Any, label: str) -> None:
        schemas.check_document(self.model, doc, label)
        if self.check is not None:
            self.check(doc, label)

    def read(self, path: Path, label: str) -> Any:
        try:
            doc = json.loads(path.read_text())
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise ArtifactError(f"{label}: not a readable JSON document ({exc})") from None
        self._check(doc, label)
        return doc

    def save(self, obj: Any, tmp: Path, label: str, root: Path | None = None) -> None:
        doc = json.loads(json.dumps(obj, default=float))  # plain JSON types, as a reader will see them
        self._check(doc, label)
        tmp.write_text(json.dumps(_finite_json(doc), indent=2, sort_keys=True) + "\n")


@dataclass(frozen=True)
class Figure(Kind):
    """A PNG figure; saved from a matplotlib figure, loads as its path once it decodes."""

    dpi: int = 90
    description = "figure (PNG)"

    def read(self, path: Path, label: str) -> Path:
        from PIL import Image, UnidentifiedImageError

        try:
            with Image.open(path) as image:
                image.verify()
                if image.format != "PNG":
                    raise ArtifactError(f"{label}: a {image.format} image where a PNG is declared")
        except (OSError, UnidentifiedImageError, SyntaxError) as exc:
            raise ArtifactError(f"{label}: not a decodable PNG ({exc})") from None
        return path

    def save(self, obj: Any, tmp: Path, label: str, root: Path | None = None) -> None:
        obj.savefig(tmp, format="png", dpi=self.dpi)
        self.read(tmp, label)


@dataclass(frozen=True)
class Page(Kind):
    """An HTML page; saved from a string."""

    description = "HTML page"

    def read(self, path: Path, label: str) -> str:
        text = path.read_text()
        if "<html" not in text[:2000].lower():
            raise ArtifactError(f"{label}: no <html> element at its start")
        return text

    def save(self, obj: Any, tmp: Path, label: str, root: Path | None = None) -> None:
        tmp.write_text(obj)
        self.read(tmp, label)


def _check_torch_files(folder: Path, label: str) -> list[Path]:
    files = sorted(folder.glob("*.pt"))
    bad = [f.name for f in files if not zipfile.is_zipfile(f)]
    if bad:
        raise ArtifactError(f"{label}: not loadable torch files (truncated or corrupt): {bad}")
    return files


@dataclass(frozen=True)
class Weights(Kind):
    """A folder of `NAME.pt` torch files; saved from {name: file}, loads as the folder once every file is whole."""

    folder = True
    description = "folder of model weights"

    def read(self, path: Path, label: str) -> Path:
        if not _check_torch_files(path, label):
            raise ArtifactError(f"{label}: no *.pt file")
        return path

    def save(self, obj: Mapping[str, Path], tmp: Path, label: str) -> None:
        tmp.mkdir(parents=True)
        for name, source in obj.items():
            shutil.copy2(source, tmp / f"{name}.pt")
        self.read(tmp, label)


@dataclass(frozen=True)
class ModelFiles(Kind):
    """A folder of qoeflow model files (architecture + weights, qoeflow/models/arch.py), each loadable
    with weights_only=True; saved from {file name: model bytes}, loads as the folder once every file loads."""

    folder = True
    description = "folder of model files"

    def read(self, path: Path, label: str) -> Path:
        from qoeflow.models.arch import ModelFileError, read_model

        files = _check_torch_files(path, label)
        if not files:
            raise ArtifactError(f"{label}: no *.pt file")
        for file in files:
            try:
                read_model(file)
            except ModelFileError as exc:
                raise ArtifactError(f"{label}: {exc}") from None
        return path

    def save(self, obj: Mapping[str, bytes], tmp: Path, label: str, root: Path | None = None) -> None:
        tmp.mkdir(parents=True)
        for name, data in obj.items():
            (tmp / name).write_bytes(data)
        self.read(tmp, label)


@dataclass(frozen=True)
class ModelCatalog(Table):
    """The model catalog table; when read, every row's model file (a path from the project root) must exist.
    (When written, the files of the writing stage are not yet in place: they are published with it.)"""

    def load(self, path: Path, label: str, root: Path | None = None) -> Any:
        df = super().load(path, label)
        if root is not None:
            missing = [f"{r.variant} → {r.path}" for r in df.itertuples() if not (root / str(r.path)).is_file()]
            if missing:
                raise ArtifactError(f"{label}: model file(s) missing for {len(missing)} row(s): {', '.join(missing[:5])}")
        return df


@dataclass(frozen=True)
class VideoIndex(Kind):
    """The video stage's DuckDB index (tasks/video_db.py): saved from the built file, which is moved into place;
    read only when it opens and its schema is this qoeflow's."""

    description = "video index (DuckDB)"

    def read(self, path: Path, label: str) -> Path:
        from tasks.video_db import VideoIndexError, open_index

        try:
            open_index(path).close()
        except VideoIndexError as exc:
            raise ArtifactError(f"{label}: {exc}") from None
        return path

    def save(self, obj: Path, tmp: Path, label: str, root: Path | None = None) -> None:
        shutil.move(str(obj), tmp)
        self.read(tmp, label)


@dataclass(frozen=True)
class Checkpoints(Kind):
    """A persisted folder of per-job checkpoints that the training loop writes in place, file by file
    (each atomically); a damaged checkpoint is the training loop's to report, so loading only checks the folder."""

    folder = True
    description = "folder of checkpoints"


CATALOG: dict[str, Kind] = {
    # train
    "curves": Table(validate.check_curves),
    "jobs": Document(schemas.JobsDoc),
    "models": Weights(),
    "checkpoints": Checkpoints(),
    "figure": Figure(),
    # forecast
    "forecasts": Table(validate.check_forecasts),
    "forecast_figure": Figure(dpi=80),
    # allocate
    "allocation": Document(schemas.AllocationDoc),
    "allocation_figure": Figure(dpi=80),
    # continue
    "continued_curves": Table(validate.check_curves),
    "plan_vs_actual": Table(validate.check_plan_vs_actual),
    "selection": Document(schemas.SelectionDoc),
    "continued_models": Weights(),
    "continued_checkpoints": Checkpoints(),
    "replans": Document(schemas.ReplansDoc),
    "replans_figure": Figure(dpi=80),
    "backtest": Table(validate.check_backtest),
    "scores": Document(schemas.ScoresDoc),
    # compress
    "variants": ModelCatalog(validate.check_model_catalog),
    "compressed_models": ModelFiles(),
    "compression": Document(schemas.CompressionDoc),
    "compression_figure": Figure(dpi=80),
    # multiexit
    "multiexit_models": ModelFiles(),
    "exits": Document(schemas.ExitsDoc),
    "exits_figure": Figure(dpi=80),
    "model_catalog": ModelCatalog(validate.check_model_catalog),
    # bench
    "bench": Table(validate.check_bench),
    "bench_figure": Figure(dpi=80),
    "caching": Table(validate.check_caching),
    "caching_figure": Figure(dpi=80),
    # asha
    "asha": Document(schemas.AshaDoc),
    # deploy
    "bandit_summary": Document(schemas.BanditSummaryDoc, validate.check_bandit_summary),
    "bandit_figure": Figure(dpi=80),
    "qos_summary": Document(schemas.QoSSummaryDoc, validate.check_qos_summary),
    "qos_figure": Figure(dpi=80),
    "qos_single_figure": Figure(dpi=80),
    # video
    "video_index": VideoIndex(),
    "video_ingest": Table(validate.check_video_ingest),
    "video_queries": Table(validate.check_video_queries),
    "video_figure": Figure(dpi=80),
    # report
    "html": Page(),
}


def kind_of(name: str) -> Kind:
    """The declared kind of artifact `name`."""
    if name not in CATALOG:
        raise ArtifactError(f"artifact '{name}' is not declared in the catalog (tasks/catalog.py)")
    return CATALOG[name]
