"""The training recipe's parts, without Ray: schedule, optimizer, augmentation, kept epoch,
initialisation, checkpoint metadata, the refusal to resume a run on other data, content split."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from pipeline.models import build_model
from pipeline.models.checkpoint import CheckpointError, ModelConfig, load_checkpoint, save_checkpoint
from pipeline.synthetic import Recording, _periodic_texture
from pipeline.train_job import _check_resumable, _run_identity
from pipeline.frames import sample_clip
from pipeline.training import (BestEpoch, EpochStats, Schedule, TrainSettings, augment,
                               build_optimizer, jitter_time, left_chance_epoch, pool_frames,
                               steps_per_epoch)
from videos import decode_index, write_lossless_index_video


def test_learning_rate_warms_up_scales_with_the_global_batch_and_decays_to_zero():
    settings = TrainSettings(epochs=10, min_steps=0, batch_size=4, lr=1e-3, warmup_epochs=1)
    one, two = Schedule(settings, 1, 20), Schedule(settings, 2, 10)
    assert one.peak == pytest.approx(1e-3) and two.peak == pytest.approx(2e-3)
    # Linear up to a global batch of 16 clips, flat beyond (measured: tests/benchmarks/lr_scaling.py).
    assert [Schedule(settings, workers, 10).peak for workers in (4, 8, 16)] == \
        pytest.approx([4e-3, 4e-3, 4e-3])
    assert one.lr_at(0) == pytest.approx(1e-3 / 20)  # warm-up starts small...
    assert one.lr_at(19) == pytest.approx(1e-3)  # ...and reaches the peak after one epoch
    assert two.lr_at(9) == pytest.approx(2e-3)
    decay = [one.lr_at(step) for step in range(20, 200)]
    assert all(a >= b for a, b in zip(decay, decay[1:])) and decay[-1] < 1e-6
    assert steps_per_epoch(168, 4, 2) == 21 and steps_per_epoch(3, 4, 1) == 1


def test_a_small_corpus_trains_for_the_minimum_steps_and_a_large_one_for_the_epochs():
    defaults = TrainSettings()
    assert (defaults.epochs, defaults.min_steps) == (15, 600)
    assert Schedule(defaults, 1, steps_per_epoch(168, 4, 1)).epochs == 15  # 42 steps x 15 = 630
    assert Schedule(defaults, 2, steps_per_epoch(168, 4, 2)).epochs == 29  # 21 steps: 600 / 21
    assert Schedule(defaults, 2, steps_per_epoch(8000, 4, 2)).epochs == 15
    exact = Schedule(TrainSettings(epochs=3, min_steps=0), 2, 21)
    assert exact.epochs == 3  # `--epochs 3` runs 3 epochs
    # The cosine reaches zero at the end of the epochs actually run, not of `epochs`.
    longer = Schedule(defaults, 2, 21)
    assert longer.lr_at(15 * 21) > 0.1 * longer.peak and longer.lr_at(29 * 21 - 1) < 0.01 * longer.peak


def test_weight_matrices_with_a_large_fan_in_learn_slower():
    model = build_model("cnn3dgn_gru128", 7)
    optimizer = build_optimizer(model, TrainSettings())
    scales = {id(group["params"][0]): group["lr_scale"] for group in optimizer.param_groups}
    gru = model.head.rnns[0]
    assert scales[id(gru.weight_ih_l0)] == pytest.approx(512 / 4096)  # 64 channels x 8 x 8
    assert scales[id(gru.weight_hh_l0)] == 1.0 and scales[id(model.head.classifier.weight)] == 1.0
    decay = {id(group["params"][0]): group["weight_decay"] for group in optimizer.param_groups}
    assert decay[id(gru.bias_ih_l0)] == 0.0 and decay[id(gru.weight_hh_l0)] > 0.0


def _moving_bar(direction: int) -> np.ndarray:
    """uint8 [1, 8, 32, 32, 3]: a bright vertical bar moving 2 px per frame left or right."""
    clip = np.full((1, 8, 32, 32, 3), 40, np.uint8)
    for t in range(8):
        x = 16 + direction * (2 * t - 7)
        clip[0, t, :, x - 1:x + 2] = 230
    return clip


def _bar_positions(tensor: torch.Tensor) -> np.ndarray:
    brightness = tensor[0].mean(dim=(0, 2)).numpy()  # [T, W]
    weights = np.clip(brightness - brightness.mean(axis=1, keepdims=True), 0, None)
    return (weights * np.arange(brightness.shape[1])).sum(1) / weights.sum(1)


def test_augmentation_changes_appearance_but_never_the_direction_of_motion():
    rng = np.random.default_rng(0)
    settings = TrainSettings()
    for direction in (-1, 1):
        clip = _moving_bar(direction)
        seen = set()
        for _ in range(30):
            out = augment(clip, rng, settings)
            assert out.shape == (1, 3, 8, 32, 32) and 0.0 <= out.min() and out.max() <= 1.0
            positions = _bar_positions(out)
            assert np.all(np.sign(np.diff(positions)) == direction)  # no flip, no time reversal
            seen.add(round(float(out.mean()), 3))
        assert len(seen) > 20  # and it does vary what the clip looks like


@pytest.mark.parametrize("count", [7, 90, 301])  # fewer frames than the pool, and more
def test_the_training_pool_holds_the_served_frames_and_jitter_keeps_time_in_order(tmp_path, count):
    settings = TrainSettings()
    assert settings.temporal_jitter > 0 and pool_frames(20, settings) == 39
    assert pool_frames(20, TrainSettings(temporal_jitter=0.0)) == 20
    video = write_lossless_index_video(tmp_path / "index.mkv", count)
    served = decode_index(sample_clip(str(video), num_frames=20, size=(16, 16)))
    pool = sample_clip(str(video), num_frames=39, size=(16, 16))
    # Without jitter, training would see exactly what inference sees: the pool's even frames.
    assert np.array_equal(decode_index(pool[::2]), served)
    rng = np.random.default_rng(0)
    stretches = set()
    for _ in range(50):
        picked = decode_index(jitter_time(pool[None], 20, rng, settings)[0])
        assert len(picked) == 20 and np.all(np.diff(picked) >= 0)  # never backwards in time
        stretch = (picked[-1] - picked[0]) / max(1, count - 1)
        assert 1 - settings.temporal_jitter - 0.1 <= stretch <= 1.0
        stretches.add((picked[0], picked[-1]))
    assert count < 20 or len(stretches) > 10  # start and speed do vary
    assert jitter_time(pool[None, :20], 20, rng, settings).shape == (1, 20, 16, 16, 3)


def test_the_kept_epoch_is_the_best_on_validation():
    best = BestEpoch()
    history = [EpochStats(1, 2.0, 0.1, 1, 0.20, 1.9), EpochStats(2, 1.0, 0.6, 1, 0.80, 0.6),
               EpochStats(3, 0.5, 0.9, 1, 0.70, 0.8), EpochStats(4, 0.4, 0.9, 1, 0.80, 0.5)]
    kept = [best.offer(stats) for stats in history]
    assert kept == [True, True, False, True] and best.epoch == 4  # a tie goes to the lower loss
    assert left_chance_epoch(history, 7) == 2 and left_chance_epoch(history[:1], 4) is None
    without_validation = BestEpoch()
    for stats in (EpochStats(1, 2.0, 0.1, 1), EpochStats(2, 1.5, 0.2, 1)):
        without_validation.offer(stats)
    assert without_validation.epoch == 2


def test_recurrent_heads_start_as_keras_would():
    gru = build_model("cnn3d_gru128", 4).head.rnns[0].requires_grad_(False)
    bound = math.sqrt(6 / (4096 + 128))  # Glorot-uniform per gate block
    assert gru.weight_ih_l0.abs().max() <= bound + 1e-6
    assert float(gru.weight_ih_l0.std()) == pytest.approx(bound / math.sqrt(3), rel=0.05)
    block = gru.weight_hh_l0[:128]
    assert torch.allclose(block @ block.T, torch.eye(128), atol=1e-4)  # orthogonal
    assert gru.bias_ih_l0.abs().sum() == 0 and gru.bias_hh_l0.abs().sum() == 0
    lstm = build_model("cnn3d_lstm32", 4).head.rnns[0].requires_grad_(False)
    assert torch.all(lstm.bias_ih_l0[32:64] == 1.0)  # forget gate


def test_checkpoints_carry_their_clip_span_and_refuse_other_sampling(tmp_path):
    config = ModelConfig("cnn3dbn_gru", ("A", "B"), clip_seconds=2.5, dataset_fingerprint="abc")
    save_checkpoint(config.build(), config, tmp_path / "m.pt")
    _, loaded = load_checkpoint(tmp_path / "m.pt")
    assert loaded == ModelConfig("cnn3dbn_gru128", ("A", "B"), clip_seconds=2.5,
                                 dataset_fingerprint="abc")
    assert loaded.window_seconds() == 2.5  # default: the span it was trained on
    assert loaded.window_seconds(10.0) == 10.0 and loaded.window_seconds(0) is None
    assert ModelConfig("cnn3d", ("A",)).window_seconds() is None  # older checkpoints: whole video
    legacy = {**config.to_dict(), "extra": {}}
    legacy.pop("clip_seconds")
    assert ModelConfig.from_dict(legacy).clip_seconds is None
    with pytest.raises(CheckpointError, match="sampling 'random'"):
        ModelConfig.from_dict({**config.to_dict(), "sampling": "random"})


def test_a_run_is_not_resumed_on_other_data_or_settings():
    config = ModelConfig("cnn3dbn_gru", ("A", "B"), dataset_fingerprint="abc")
    identity = _run_identity(config, TrainSettings(epochs=5))
    _check_resumable(None, {}, identity)  # a fresh run
    more_epochs = _run_identity(config, TrainSettings(epochs=50))
    _check_resumable(None, {"identity": identity}, more_epochs)  # the same command, more epochs
    other_data = _run_identity(ModelConfig("cnn3dbn_gru", ("A", "B"), dataset_fingerprint="xyz"),
                               TrainSettings(epochs=5))

    class Run:
        name, storage_path = "model-1", "/runs"

    with pytest.raises(ValueError, match=r"other model\.dataset_fingerprint"):
        _check_resumable(Run, {"identity": identity}, other_data)
    with pytest.raises(ValueError, match=r"other settings\.lr"):
        _check_resumable(Run, {"identity": identity},
                         _run_identity(config, TrainSettings(epochs=5, lr=3e-3)))
    # a run folder with Ray Train state but no identity (an older vidpipe's run, a lost marker)
    with pytest.raises(ValueError, match="does not record what it was trained on"):
        _check_resumable(Run, {}, identity, started=True)
    with pytest.raises(ValueError, match="does not record what it was trained on"):
        _check_resumable(Run, {"mlflow_run_id": "abc"}, identity, started=True)


def test_an_existing_run_folder_without_an_identity_is_not_resumed(tmp_path):
    from pipeline.train_job import RUN_MARKER, _run_started
    from pipeline.training import RunSpec

    run = RunSpec(str(tmp_path), "model-1")
    assert not _run_started(run)  # no folder yet
    (tmp_path / "model-1").mkdir()
    (tmp_path / "model-1" / RUN_MARKER).write_text("{}")
    assert not _run_started(run)  # only the marker vidpipe writes before training
    (tmp_path / "model-1" / "checkpoint_2026-11-30_00-00-00.000000").mkdir()
    assert _run_started(run)


def test_content_split_families_look_different():
    """Validation textures (`shapes`: flat colours, hard edges) are of another family than the
    training ones (`noise`: smooth blobs), so validation shows content never trained on."""
    rng = np.random.default_rng(0)

    def flat_share(family: str) -> float:
        recording = Recording(np.eye(3), 5.0, 64, 64, 25, 2.0, families=(family,))
        texture = _periodic_texture(rng, recording)
        return float((np.abs(np.diff(texture, axis=1)).max(axis=2) == 0).mean())

    assert flat_share("shapes") > 0.2 > 0.01 > flat_share("noise")


def test_mixstyle_mixes_clip_statistics_in_training_and_is_the_identity_at_inference():
    from pipeline.models.backbones import MixStyle

    torch.manual_seed(0)
    mix = MixStyle(p=1.0)
    x = torch.randn(4, 8, 3, 5, 5) * torch.arange(1, 5).view(4, 1, 1, 1, 1) + 10 * torch.arange(4).view(4, 1, 1, 1, 1)
    assert torch.equal(mix.eval()(x), x)
    mixed = mix.train()(x)
    means, stds = x.mean(dim=(2, 3, 4)), x.std(dim=(2, 3, 4))
    new_means = mixed.mean(dim=(2, 3, 4))
    assert not torch.allclose(new_means, means, atol=1e-3)  # styles moved...
    low, high = means.min(dim=0).values, means.max(dim=0).values
    assert bool(((new_means >= low - 1e-4) & (new_means <= high + 1e-4)).all())  # ...between clips'
    # the normalised content is untouched: a per-clip, per-channel affine map of the input
    assert torch.allclose((mixed - new_means[..., None, None, None]) / mixed.std(dim=(2, 3, 4))[..., None, None, None],
                          (x - means[..., None, None, None]) / stds[..., None, None, None], atol=1e-4)
    model = build_model("cnn3dbnmix_gru", 4).eval()
    clips = torch.rand(2, 3, 20, 64, 64)
    assert torch.equal(model(clips), model(clips))  # no randomness when classifying


def test_a_run_resumes_after_its_identity_went_through_the_marker_file():
    import json

    config = ModelConfig("cnn3dbn_gru", ("A", "B"), dataset_fingerprint="abc",
                         training_videos=("0a1b2c", "3d4e5f"))
    identity = _run_identity(config, TrainSettings(epochs=5))
    stored = json.loads(json.dumps({"identity": identity}))  # tuples come back as lists
    _check_resumable(None, stored, identity)  # the same run: resumed, not refused
