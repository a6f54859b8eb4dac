"""The paper's model family: exact parameter counts, shapes, checkpoints that carry their config."""

from __future__ import annotations

import os
import pickle
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
import torch

from pipeline.model_config import FORMAT, read_config
from pipeline.models import build_model, count_parameters, list_models
from pipeline.models.checkpoint import (CheckpointError, ModelConfig, load_checkpoint,
                                        save_checkpoint)

ROOT = Path(__file__).resolve().parents[1]


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


def test_the_torch_free_names_are_the_builders_names():
    from pipeline.architectures import BACKBONE_NAMES
    from pipeline.models.backbones import BACKBONES

    assert tuple(BACKBONES) == BACKBONE_NAMES


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


def test_a_drivers_modules_read_a_checkpoints_config_without_importing_torch(tmp_path):
    config = ModelConfig("cnn3d_none", ("MoveLeft", "MoveRight"), frames=8, size=32,
                         clip_seconds=2.0, training_videos=("ab12",))
    save_checkpoint(build_model("cnn3d_none", 2, 8, 32), config, tmp_path / "model.pt")
    data = (tmp_path / "model.pt").read_bytes()
    assert read_config(data) == load_checkpoint(data)[1] == config
    # What a classify or scan driver runs before its workers: the CLI, the job modules, the REF.
    code = ("import sys; import pipeline.cli, pipeline.inference, pipeline.scan, "
            "pipeline.infrastructure; from pipeline.model_store import load_model; "
            f"loaded = load_model({str(tmp_path / 'model.pt')!r}); "
            "print(loaded.config.arch, loaded.config.frames, 'torch' in sys.modules)")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)}, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["cnn3d_none", "8", "False"]


class _RemoveFile:
    def __init__(self, path):
        self.path = path

    def __reduce__(self):
        return (os.remove, (self.path,))


def test_reading_a_config_runs_nothing_from_the_file(tmp_path):
    canary = tmp_path / "canary"
    canary.write_text("still here")
    hostile = tmp_path / "hostile.pt"
    with zipfile.ZipFile(hostile, "w") as archive:
        archive.writestr("archive/data.pkl", pickle.dumps(
            {"format": FORMAT, "config": _RemoveFile(str(canary)), "state_dict": {}}))
    with pytest.raises(CheckpointError, match="not a readable checkpoint"):
        read_config(hostile.read_bytes())
    assert canary.read_text() == "still here"
    with pytest.raises(CheckpointError, match="not a readable checkpoint"):
        read_config(b"not a zip at all")
    torch.save({"weights": torch.zeros(1)}, tmp_path / "foreign.pt")
    with pytest.raises(CheckpointError, match="not a vidpipe checkpoint"):
        read_config((tmp_path / "foreign.pt").read_bytes())


def test_weights_that_do_not_fit_their_model_are_one_line_naming_them(tmp_path):
    config = ModelConfig("cnn3d_none", ("MoveLeft", "MoveRight"), frames=8, size=32)
    weights = build_model("cnn3d_none", 2, 8, 32).state_dict()
    first = next(iter(weights))
    misshapen = {**weights, first: torch.zeros(3)}
    missing = {key: value for key, value in weights.items() if key != first}
    for state, what in ((misshapen, "misshapen"), (missing, "missing")):
        torch.save({"format": FORMAT, "config": config.to_dict(), "state_dict": state},
                   tmp_path / "model.pt")
        assert read_config((tmp_path / "model.pt").read_bytes()) == config  # the config is fine
        with pytest.raises(CheckpointError) as failure:
            load_checkpoint(tmp_path / "model.pt")
        assert str(failure.value) == (f"checkpoint weights do not fit its cnn3d_none model "
                                      f"(1 difference(s): {what} {first})")


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


def test_the_fast_pool_equals_max_pool_and_keeps_its_gradients_in_training():
    from pipeline.models.backbones import MaxPool3d2

    torch.manual_seed(0)
    fast, reference = MaxPool3d2().eval(), torch.nn.MaxPool3d(2)
    for shape in ((2, 3, 20, 64, 64), (1, 4, 5, 7, 9)):  # odd sizes are floored, as MaxPool3d does
        x = torch.randn(shape)
        with torch.inference_mode():
            assert torch.equal(fast(x), reference(x))
    x = torch.randn(2, 3, 4, 6, 6, requires_grad=True)
    fast.train()(x).sum().backward()  # training: nn.MaxPool3d's own backward (one index per window)
    assert x.grad.sum().item() == 2 * 3 * 2 * 3 * 3


@pytest.mark.parametrize("arch", ["motion3d_gru", "cnn3d_gru", "cnn3dbnmix_gru", "cnn3dgn_gru",
                                  "cnn2d_gru32"])
def test_the_inference_copy_predicts_what_the_model_does(arch):
    import numpy as np

    from pipeline.models import for_inference, predict_probs

    torch.manual_seed(0)
    model = build_model(arch, 4, frames=8, size=32)
    with torch.no_grad():  # BatchNorm statistics that are not the initial ones
        model.train()(torch.rand(4, 3, 8, 32, 32) * 2)
    model.eval()
    clips = (np.random.default_rng(0).random((5, 8, 32, 32, 3)) * 255).astype(np.uint8)
    expected = predict_probs(model, clips)
    fast = for_inference(model)
    np.testing.assert_allclose(predict_probs(fast, clips), expected, atol=1e-5)
    np.testing.assert_allclose(predict_probs(fast, clips[:1]), expected[:1], atol=1e-5)  # a lone clip
    has_batch_norm = any(isinstance(m, torch.nn.BatchNorm3d) for m in model.modules())
    assert has_batch_norm == ("bn" in arch or arch.startswith("motion3d"))
    if has_batch_norm:
        assert not any(isinstance(m, torch.nn.BatchNorm3d) for m in fast.modules())  # folded


@pytest.mark.parametrize("arch, width", [("motion3d_gru", 128), ("cnn2d_gru32_lstm32", 32),
                                         ("cnn3d_none", None)])
def test_embeddings_are_the_state_the_classifier_reads_normalised(arch, width):
    """The rows' embedding: the head's input to its dense classifier (the last recurrent
    layer's final state; the time average for `none`), L2-normalised, with the same
    probabilities as without it, on the inference copy and for a lone clip too."""
    import numpy as np

    from pipeline.models import for_inference, predict, predict_probs

    torch.manual_seed(0)
    model = build_model(arch, 4, frames=8, size=32).eval()
    clips = (np.random.default_rng(1).random((3, 8, 32, 32, 3)) * 255).astype(np.uint8)
    x = torch.rand(2, 3, 8, 32, 32)
    with torch.no_grad():
        logits, state = model.logits_and_embedding(x)
        assert torch.allclose(logits, model(x), atol=1e-6)
        assert torch.allclose(model.head.classifier(state), logits, atol=1e-6)
    assert state.shape == (2, model.embedding_size)
    assert width is None or model.embedding_size == width
    for predictor in (model, for_inference(model)):
        out = predict(predictor, clips, embeddings=True)
        np.testing.assert_allclose(out.probs, predict_probs(model, clips), atol=1e-5)
        assert out.embeddings.shape == (3, model.embedding_size)
        np.testing.assert_allclose(np.linalg.norm(out.embeddings, axis=1), 1, atol=1e-5)
        lone = predict(predictor, clips[:1], embeddings=True)
        np.testing.assert_allclose(lone.embeddings, out.embeddings[:1], atol=1e-5)
    assert predict(model, clips).embeddings is None


def test_the_motion_backbone_sees_luma_and_its_change_whatever_the_colour_and_exposure():
    import numpy as np

    from pipeline.models import clips_to_tensor
    from pipeline.models.backbones import Motion3d

    torch.manual_seed(0)
    model = build_model("motion3d_gru", 7).eval()
    assert count_parameters(model.backbone) == 182_464 and count_parameters(model) == 331_591
    clip = torch.rand(2, 3, 20, 64, 64)
    assert model.backbone(clip).shape == (2, 5, 256)  # 5 time steps of a 2x2 grid of 64 channels
    assert Motion3d.output_shape(20, 64) == (5, 256)
    stem = model.backbone.stem(clip)
    assert stem.shape == (2, 2, 20, 64, 64)
    assert torch.all(stem[:, 1, 0] == 0)  # the first frame has no previous one
    # The luma channel is standardised over the clip, and the difference follows it frame to frame.
    assert torch.allclose(stem[:, 0].mean(dim=(1, 2, 3)), torch.zeros(2), atol=1e-5)
    assert torch.allclose(stem[:, 1, 1:], 4.0 * (stem[:, 0, 1:] - stem[:, 0, :-1]), atol=1e-5)
    rng = np.random.default_rng(0)
    colour = rng.integers(0, 200, (1, 20, 64, 64, 3), dtype=np.uint8)
    luma = (colour.astype(np.float32) @ np.float32([0.299, 0.587, 0.114]))[..., None]
    gray = np.repeat(np.rint(luma), 3, axis=-1).astype(np.uint8)
    darker = np.rint(gray * 0.6 + 20).astype(np.uint8)  # another exposure of the same scene
    inputs = [model.backbone.stem(clips_to_tensor(clips))
              for clips in (colour, gray, darker, colour[:, ::-1])]
    # Equal up to the rounding of luma to 8 bits (a standardised step of ~0.02, x4 on the
    # difference channel, 1 / 0.6 of that for the darker exposure); time reversed is another
    # input altogether.
    def mean_gap(a, b):
        return (a - b).abs().mean().item()
    assert mean_gap(inputs[1], inputs[0]) < 0.05 and mean_gap(inputs[2], inputs[1]) < 0.05
    assert mean_gap(inputs[3], inputs[0]) > 1.0
    features = [model.backbone(clips_to_tensor(clips)) for clips in (colour, darker)]
    assert mean_gap(features[0], features[1]) < 0.02 * features[0].abs().mean().item()
