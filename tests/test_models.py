"""Model loading from each source, with checkpoints treated as untrusted input."""

from __future__ import annotations

import argparse
import urllib.error
from pathlib import Path

import pytest
import torch

from greencompress.core.errors import ModelLoadError
from greencompress.models.sources import ModelSpec, load_model, load_state_dict
from tests.conftest import RECIPES

ARCHITECTURE = f"{RECIPES / 'models' / 'cifar_resnet.py'}:resnet20"


@pytest.fixture
def reference_model():
    from greencompress.models.sources import resolve_callable

    torch.manual_seed(0)
    return resolve_callable(ARCHITECTURE)()


def spec(**fields) -> ModelSpec:
    return ModelSpec.model_validate(fields)


def same_weights(a: torch.nn.Module, b: torch.nn.Module) -> bool:
    return all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values()))


@pytest.mark.parametrize("layout", ["plain", "state_dict", "model", "dataparallel", "module_object"])
def test_checkpoint_layouts_all_load(layout, reference_model, tmp_path):
    state = reference_model.state_dict()
    content = {
        "plain": state,
        "state_dict": {"state_dict": state, "best_prec1": 91.2},
        "model": {"model": state, "epoch": 3},
        "dataparallel": {"state_dict": {f"module.{k}": v for k, v in state.items()}},
        "module_object": {"model": reference_model},
    }[layout]
    path = tmp_path / "weights.pt"
    torch.save(content, path)
    trusted = layout == "module_object"  # a pickled nn.Module needs code to unpickle
    loaded = load_model(spec(source="callable", architecture=ARCHITECTURE, checkpoint=path, trust_checkpoint=trusted))
    assert same_weights(loaded.module, reference_model)
    assert not loaded.module.training
    assert loaded.provenance["sha256"] and loaded.provenance["checkpoint"] == str(path)


def test_checkpoint_needing_unpickling_is_refused_with_how_to_opt_in(reference_model, tmp_path):
    path = tmp_path / "pickled.pt"
    torch.save({"state_dict": reference_model.state_dict(), "args": argparse.Namespace(lr=0.1)}, path)
    with pytest.raises(ModelLoadError) as caught:
        load_state_dict(path)
    assert "refused" in str(caught.value) and "argparse.Namespace" in str(caught.value)
    assert "model.trust_checkpoint: true" in str(caught.value)
    assert set(load_state_dict(path, trust=True)) == set(reference_model.state_dict())


def test_garbage_file_is_not_a_checkpoint(tmp_path):
    path = tmp_path / "garbage.pt"
    path.write_bytes(b"definitely not a zip or pickle")
    with pytest.raises(ModelLoadError, match="not a readable PyTorch checkpoint"):
        load_state_dict(path)


def test_checkpoint_of_another_architecture_names_the_keys(tmp_path):
    path = tmp_path / "other.pt"
    torch.save({"fc.weight": torch.zeros(10, 4)}, path)
    with pytest.raises(
        ModelLoadError, match=r"missing from the checkpoint: conv1.weight.*not in the architecture: fc.weight"
    ):
        load_model(spec(source="callable", architecture=ARCHITECTURE, checkpoint=path))


def test_checkpoint_with_other_shapes_is_explained(reference_model, tmp_path):
    path = tmp_path / "weights.pt"
    torch.save(reference_model.state_dict(), path)
    with pytest.raises(ModelLoadError, match="size mismatch for linear.weight"):
        load_model(spec(source="callable", architecture=ARCHITECTURE, checkpoint=path, num_classes=100))


def test_callable_given_as_importable_module(reference_model, tmp_path, monkeypatch):
    monkeypatch.syspath_prepend(str(RECIPES / "models"))
    path = tmp_path / "weights.pt"
    torch.save(reference_model.state_dict(), path)
    loaded = load_model(spec(source="callable", architecture="cifar_resnet:resnet20", checkpoint=path))
    assert same_weights(loaded.module, reference_model)


def test_callable_that_cannot_be_imported(tmp_path):
    path = tmp_path / "weights.pt"
    torch.save({}, path)
    with pytest.raises(ModelLoadError, match="cannot import 'no_such_package.models'"):
        load_model(spec(source="callable", architecture="no_such_package.models:net", checkpoint=path))
    with pytest.raises(ModelLoadError, match="has no callable 'resnet99'"):
        load_model(spec(source="callable", architecture=ARCHITECTURE.replace("resnet20", "resnet99"), checkpoint=path))


def test_torchvision_checkpoint_source(tmp_path):
    import torchvision

    torch.manual_seed(1)
    original = torchvision.models.get_model("mobilenet_v3_small", num_classes=7)
    path = tmp_path / "mobilenet.pth"
    torch.save({"model": original.state_dict()}, path)
    loaded = load_model(spec(source="checkpoint", name="mobilenet_v3_small", num_classes=7, checkpoint=path))
    assert same_weights(loaded.module, original)


def test_torchvision_without_weights_is_labelled_random():
    loaded = load_model(spec(source="torchvision", name="resnet18", num_classes=10))
    assert loaded.module.fc.out_features == 10
    assert "random weights" in loaded.provenance["description"]


@pytest.fixture
def empty_torch_home(tmp_path, monkeypatch) -> Path:
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    return tmp_path / "torch" / "hub" / "checkpoints"


def test_torchvision_weights_offline_say_which_file_to_put_where(empty_torch_home, monkeypatch):
    def no_network(*args, **kwargs):
        raise urllib.error.URLError("no route to host")

    monkeypatch.setattr("torch.hub.load_state_dict_from_url", no_network)
    with pytest.raises(ModelLoadError) as caught:
        load_model(spec(source="torchvision", name="resnet18", weights="IMAGENET1K_V1"))
    message = str(caught.value)
    assert "'resnet18-f37072fd.pth'" in message
    assert str(empty_torch_home / "resnet18-f37072fd.pth") in message


def test_torchvision_weights_load_from_the_cache_folder_the_error_names(empty_torch_home):
    import torchvision

    torch.manual_seed(2)
    stand_in = torchvision.models.mobilenet_v3_small()  # the real file's layout, other values
    empty_torch_home.mkdir(parents=True)
    file_name = Path(torchvision.models.MobileNet_V3_Small_Weights.IMAGENET1K_V1.url).name
    torch.save(stand_in.state_dict(), empty_torch_home / file_name)
    loaded = load_model(spec(source="torchvision", name="mobilenet_v3_small", weights="DEFAULT"))
    assert same_weights(loaded.module, stand_in)
    assert loaded.provenance["weights"] == "MobileNet_V3_Small_Weights.IMAGENET1K_V1"


def test_unknown_weights_name_lists_the_valid_ones(empty_torch_home):
    with pytest.raises(ModelLoadError, match="has no weights 'IMAGENET1K_V9'; expected one of: DEFAULT, IMAGENET1K_V1"):
        load_model(spec(source="torchvision", name="resnet18", weights="IMAGENET1K_V9"))
