"""The paper's model family: exact parameter counts, shapes, checkpoints that carry their config."""

from __future__ import annotations

import pickle

import pytest
import torch

from pipeline.models import build_model, count_parameters, list_models
from pipeline.models.checkpoint import (CheckpointError, ModelConfig, load_checkpoint,
                                        save_checkpoint)


def test_cnn3d_gru_reproduces_the_paper_parameter_counts_layer_by_layer():
    model = build_model("cnn3d_gru", num_classes=4, frames=20, size=100)
    layers = {
        "conv1": model.backbone.conv1,
        "conv2": model.backbone.conv2,
        "conv3": model.backbone.conv3,
        "gru": model.head.rnns[0],
        "dense": model.head.classifier,
    }
    counts = {name: count_parameters(layer) for name, layer in layers.items()}
    assert counts == {"conv1": 1_312, "conv2": 13_856, "conv3": 55_360, "gru": 3_588_864, "dense": 516}
    assert count_parameters(model) == 3_659_908
    # The GRU sees the paper's Reshape: 2 time steps of 9,216 features.
    assert model.backbone(torch.zeros(1, 3, 20, 100, 100)).shape == (1, 2, 9216)


@pytest.mark.parametrize("arch", list_models())
def test_every_architecture_maps_clips_to_logits(arch):
    model = build_model(arch, num_classes=5)
    assert model(torch.rand(2, 3, 20, 64, 64)).shape == (2, 5)


def test_family_covers_the_paper_table():
    names = set(list_models())
    for arch in ["cnn2d_lstm32", "cnn2d_gru32", "cnn2d_lstm32_gru32", "cnn3d_none", "cnn3d_lstm128",
                 "cnn3d_gru128", "cnn3d_gru32", "cnn3d_lstm32", "cnn3d_lstm32_gru32",
                 "cnn3d_gru32_lstm32", "cnn3d_gru128_lstm128", "cnn3d_lstm128_gru128"]:
        assert arch in names
    with pytest.raises(ValueError, match="unknown architecture"):
        build_model("cnn4d_gru", 3)


def test_order_blind_head_cannot_tell_a_clip_from_its_reverse():
    model = build_model("cnn2d_none", num_classes=3).eval()
    clip = torch.rand(1, 3, 20, 64, 64)
    with torch.no_grad():
        assert torch.allclose(model(clip), model(clip.flip(2)), atol=1e-5)
        recurrent = build_model("cnn2d_gru32", num_classes=3).eval()
        assert not torch.allclose(recurrent(clip), recurrent(clip.flip(2)), atol=1e-5)


def test_checkpoint_roundtrip_carries_config_and_weights(tmp_path):
    torch.manual_seed(0)
    config = ModelConfig("cnn3d_gru32", ("Left", "Right", "Up"), frames=12, size=48)
    model = config.build().eval()
    save_checkpoint(model, config, tmp_path / "m.pt")
    loaded, loaded_config = load_checkpoint(tmp_path / "m.pt")
    assert loaded_config == config
    clip = torch.rand(2, 3, 12, 48, 48)
    with torch.no_grad():
        assert torch.equal(model(clip), loaded(clip))


class _Payload:
    def __reduce__(self):
        return (print, ("unpickled arbitrary code",))


def test_loading_never_unpickles_arbitrary_objects(tmp_path):
    evil = tmp_path / "evil.pt"
    evil.write_bytes(pickle.dumps({"format": "vidpipe-checkpoint/1", "config": _Payload()}))
    with pytest.raises(CheckpointError):
        load_checkpoint(evil)
    torch.save({"weights": torch.zeros(1)}, tmp_path / "foreign.pt")
    with pytest.raises(CheckpointError, match="not a vidpipe checkpoint"):
        load_checkpoint(tmp_path / "foreign.pt")


def test_our_variants_normalise_each_convolution_and_keep_the_paper_shapes():
    import torch
    from torch import nn

    for arch, norm in (("cnn3dgn_gru", nn.GroupNorm), ("cnn3dbn_gru", nn.BatchNorm3d),
                       ("cnn3dbnmix_gru", nn.BatchNorm3d)):
        model = build_model(arch, 4, frames=20, size=64).eval()
        norms = [m for m in model.backbone.modules() if isinstance(m, norm)]
        assert [m.num_channels if norm is nn.GroupNorm else m.num_features for m in norms] == [16, 32, 64]
        # 112 more parameters than the paper's model (scale and shift per channel, no conv bias)
        assert count_parameters(model) == count_parameters(build_model("cnn3d_gru", 4)) + 112
        assert model(torch.rand(2, 3, 20, 64, 64)).shape == (2, 4)
