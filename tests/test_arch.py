"""Models as data (qoeflow/models/arch.py): every zoo model round-trips through a file that loads with
weights_only=True; damaged or foreign files give a clear error."""

import pytest
import torch
from torch import nn

from qoeflow.models import MODELS, build_model, input_shape
from qoeflow.models.arch import ModelFileError, build, describe, read_model, save_model

DIGITS = [("digits", name) for name in MODELS["digits"]]


@pytest.mark.parametrize("task,name", DIGITS)
def test_round_trip_computes_the_same(tmp_path, task, name):
    torch.manual_seed(0)
    model = build_model(task, name).eval()
    path = tmp_path / "m.pt"
    size = save_model(model, path, {"variant": name})
    assert size == path.stat().st_size
    torch.load(path, weights_only=True)  # nothing pickled
    again, meta = read_model(path)
    x = torch.rand(3, *input_shape(task))
    assert meta == {"variant": name}
    assert torch.allclose(model(x), again(x))
    assert describe(again) == describe(model)


def test_unregistered_module_is_refused():
    class Mine(nn.Module):
        def forward(self, x):
            return x

    with pytest.raises(TypeError, match="not registered with @composite"):
        describe(nn.Sequential(Mine()))


def test_foreign_composite_is_not_imported():
    with pytest.raises(ModelFileError, match="only qoeflow's own"):
        build({"type": "os.System", "children": []})


def test_damaged_files_give_clear_errors(tmp_path):
    path = tmp_path / "m.pt"
    save_model(build_model("digits", "vgg"), path)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(ModelFileError, match="truncated or corrupt"):
        read_model(path)
    torch.save({"state": {}}, path)
    with pytest.raises(ModelFileError, match="not a qoeflow model file"):
        read_model(path)
    with pytest.raises(ModelFileError, match="no such model file"):
        read_model(tmp_path / "absent.pt")
