"""Device checks shared by tests/gpu (on CUDA) and tests/test_devices.py (the same code on the CPU,
so they are known to run before a GPU ever sees them). Imports only torch, numpy and the
package's pure modules: they run on a stock PyTorch CUDA image with no other installs."""

from __future__ import annotations

import io
import socket

import numpy as np
import torch

from pipeline import devices
from pipeline.models import for_inference, predict, predict_probs
from pipeline.models.checkpoint import ModelConfig, checkpoint_bytes, load_checkpoint
from pipeline.training import (TrainSettings, build_optimizer, restore_training_state,
                               train_step, training_state, validation_stats)

CONFIG = ModelConfig("cnn3dbn_gru32", ("Left", "Right", "Up"), frames=8, size=32)


def _clips(count: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    clips = rng.integers(0, 256, (count, CONFIG.frames, CONFIG.size, CONFIG.size, 3), np.uint8)
    return clips, rng.integers(0, CONFIG.num_classes, count).astype(np.int64)


def _model(device: torch.device):
    torch.manual_seed(0)
    return CONFIG.build().to(device)


def inference_from_uint8(device: torch.device) -> None:
    """uint8 batches in, probabilities on the CPU out, the same as the CPU's."""
    clips, _ = _clips(5)
    model = _model(device)
    probs = predict_probs(model, clips, batch_size=2)
    assert probs.dtype == np.float32 and probs.shape == (5, CONFIG.num_classes)
    np.testing.assert_allclose(probs.sum(1), 1.0, atol=1e-5)
    # what classify runs (inference.Classifier): BatchNorm folded, on the same device
    served = predict_probs(for_inference(model, device), clips, batch_size=2)
    np.testing.assert_allclose(served, probs, atol=1e-4)
    # the rows' embeddings (the state the head reads, L2-normalised), as classify computes them
    embedded = predict(for_inference(model, device), clips, batch_size=2, embeddings=True)
    np.testing.assert_allclose(embedded.probs, probs, atol=1e-4)
    np.testing.assert_allclose(np.linalg.norm(embedded.embeddings, axis=1), 1.0, atol=1e-5)
    on_cpu = predict_probs(model.cpu(), clips, batch_size=2)
    np.testing.assert_allclose(probs, on_cpu, atol=1e-4)
    cpu_embedded = predict(for_inference(model, torch.device("cpu")), clips, batch_size=2,
                           embeddings=True)
    np.testing.assert_allclose(embedded.embeddings, cpu_embedded.embeddings, atol=1e-4)


def train_validate_checkpoint_resume(device: torch.device) -> None:
    """A training step, validation, a checkpoint, and a resume that continues exactly."""
    settings = TrainSettings(seed=0)
    clips, labels = _clips(4, seed=1)
    model = _model(device)
    optimizer = build_optimizer(model, settings)
    loss, correct = train_step(model, optimizer, clips, labels, settings,
                               np.random.default_rng(0), device)
    assert np.isfinite(loss) and 0 <= correct <= len(labels)
    accuracy, val_loss = validation_stats(model, clips, labels)
    assert 0.0 <= accuracy <= 1.0 and np.isfinite(val_loss)

    buffer = io.BytesIO()  # through bytes, as a Ray Train checkpoint goes
    torch.save(training_state(model, optimizer), buffer)
    state = torch.load(io.BytesIO(buffer.getvalue()), map_location="cpu", weights_only=True)
    resumed = _model(device)
    resumed_optimizer = build_optimizer(resumed, settings)
    restore_training_state(resumed, resumed_optimizer, state)
    for slot in resumed_optimizer.state.values():
        for key, value in slot.items():
            if torch.is_tensor(value) and key != "step":
                assert value.device.type == device.type, f"optimizer state {key} on {value.device}"

    # The next step from the original and from the resumed copy lands on the same weights.
    for net, opt in ((model, optimizer), (resumed, resumed_optimizer)):
        net.train()  # validation left the original in eval mode
        torch.manual_seed(5)
        train_step(net, opt, clips, labels, settings, np.random.default_rng(7), device)
    for a, b in zip(model.state_dict().values(), resumed.state_dict().values()):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-4)

    loaded, _ = load_checkpoint(checkpoint_bytes(model, CONFIG))
    np.testing.assert_allclose(predict_probs(loaded, clips), predict_probs(model, clips), atol=1e-4)


def amp_training_step_reduces_loss(device: torch.device) -> None:
    """TrainSettings.amp as a worker runs it: float16 autocast with a loss scaler on CUDA, plain
    float32 on the CPU; a few steps on one batch lower its loss either way."""
    settings = TrainSettings(seed=0, amp=True, crop_scale=1.0, brightness=0.0, contrast=0.0,
                             saturation=0.0)
    clips, labels = _clips(4, seed=3)
    model = _model(device)
    optimizer = build_optimizer(model, settings)
    scaler = devices.grad_scaler(device, settings.amp)
    assert (scaler is not None) == (device.type == "cuda")
    before = validation_stats(model, clips, labels)[1]
    for step in range(5):  # the scaler may skip a first step whose float16 gradients overflowed
        model.train()
        loss, _ = train_step(model, optimizer, clips, labels, settings,
                             np.random.default_rng(step), device, scaler=scaler)
        assert np.isfinite(loss)
    after = validation_stats(model, clips, labels)[1]
    assert after < before, (before, after)
    assert all(torch.isfinite(p).all() for p in model.parameters())
    assert all(p.dtype == torch.float32 for p in model.parameters())  # float16 only in autocast


def all_reduce_across_two_ranks(backend: str) -> None:
    """devices.all_reduce over a real process group of two ranks (two processes), each with its
    own values: every rank must get the sum and the max of both. A group of one would not do:
    there all_reduce is the identity, so a no-op passes. NCCL needs a GPU per rank."""
    import torch.multiprocessing as mp

    if backend == "nccl" and torch.cuda.device_count() < 2:
        raise RuntimeError("NCCL across two ranks needs two GPUs")
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    mp.spawn(_reduce_on_rank, args=(2, backend, port), nprocs=2, join=True)


def _reduce_on_rank(rank: int, world_size: int, backend: str, port: int) -> None:
    import datetime

    import torch.distributed as dist

    if backend == "nccl":
        torch.cuda.set_device(rank)
    # A rank that dies before joining must fail its peer within a minute, not hang the suite.
    dist.init_process_group(backend, init_method=f"tcp://127.0.0.1:{port}", rank=rank,
                            world_size=world_size, timeout=datetime.timedelta(seconds=60))
    try:
        # rank r holds [r + 1, 10 (r + 1), -r]: with two ranks the sum is [3, 30, -1] and the max
        # [2, 20, 0], which neither rank holds alone.
        mine = [rank + 1.0, 10.0 * (rank + 1), -float(rank)]
        assert devices.all_reduce(mine) == [3.0, 30.0, -1.0], (rank, mine)
        assert devices.all_reduce(mine, op="max") == [2.0, 20.0, 0.0], (rank, mine)
    finally:
        dist.destroy_process_group()


def mixed_precision_agrees(device: torch.device) -> None:
    """Probabilities with mixed precision on and off agree within a half-precision tolerance."""
    clips, _ = _clips(6, seed=2)
    model = _model(device)
    exact = predict_probs(model, clips, mixed_precision=False)
    mixed = predict_probs(model, clips, mixed_precision=True)
    assert mixed.dtype == np.float32
    np.testing.assert_allclose(mixed, exact, atol=0.02)
    assert (mixed.argmax(1) == exact.argmax(1)).mean() >= 5 / 6
