"""Training the classifier: augmentation, the epoch loop, and the two engines that drive it.

The pieces (augmentation, one epoch, prediction) are plain functions over arrays. `train_distributed`
is the engine of `vidpipe train`: Ray Train's TorchTrainer with DDP over N workers, fed by a Ray
Data clip dataset (clips.py), checkpointing every epoch and resuming from the last checkpoint when
the same run is started again. `fit` is the plain single-process loop, kept as the reference the
benchmark compares against. Both keep the epoch that scored best on validation.

The recipe (measured in README.md, "Training recipe"): the paper's batch of 4 clips per worker
and lr 0.001 per 4 clips, scaled linearly with the global batch up to 16 clips and flat beyond
(`lr_scale`); at least `min_steps` optimizer
steps on a small corpus; AdamW with weight decay; linear warm-up then cosine decay; a per-layer
learning-rate scale for weight matrices with a large fan-in (the paper GRU's 4,096 inputs);
random resized crops, photometric jitter and temporal jitter; every epoch a new order that
mixes classes (shuffled_every_epoch).
"""

from __future__ import annotations

import logging
import os
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from . import devices
from .errors import InvalidInput
from .models import clips_to_tensor, predict_probs
from .models.checkpoint import ModelConfig, unwrap
# The settings live in a module without torch (the CLI shows their defaults); re-exported here.
from .train_settings import LINEAR_SCALING_LIMIT, REFERENCE_BATCH, TrainSettings, lr_scale


@dataclass
class EpochStats:
    epoch: int
    loss: float
    accuracy: float
    clips_per_s: float
    val_accuracy: float | None = None
    val_loss: float | None = None
    seconds: float | None = None  # training time of the epoch (slowest worker), excluding validation


@dataclass
class LabelledClips:
    """Decoded clips uint8 [N, T, H, W, 3] with label indices [N] (see clips.to_arrays)."""

    clips: np.ndarray
    labels: np.ndarray


def augment(clips: np.ndarray, rng: np.random.Generator, settings: TrainSettings) -> torch.Tensor:
    """Motion-preserving augmentation of uint8 clips [B, T, H, W, 3] -> float [B, 3, T, H, W].

    Per clip, the same for all its frames: a random resized crop (scale, aspect and position;
    motion keeps its direction, only its speed in pixels changes), and brightness, contrast and
    saturation jitter. No flips and no time reversal: they would turn MoveLeft into MoveRight.
    """
    batch = clips_to_tensor(clips)  # [B, 3, T, H, W]
    _, _, frames, height, width = batch.shape
    out = torch.empty_like(batch)
    for i in range(len(batch)):
        clip = batch[i]
        if settings.crop_scale < 1.0:
            area = rng.uniform(settings.crop_scale, 1.0) * height * width
            aspect = np.exp(rng.uniform(np.log(3 / 4), np.log(4 / 3)))
            crop_h = int(min(height, round(np.sqrt(area / aspect))))
            crop_w = int(min(width, round(np.sqrt(area * aspect))))
            top = int(rng.integers(0, height - crop_h + 1))
            left = int(rng.integers(0, width - crop_w + 1))
            crop = clip[:, :, top:top + crop_h, left:left + crop_w].transpose(0, 1)  # [T, 3, h, w]
            clip = nn.functional.interpolate(crop, size=(height, width), mode="bilinear",
                                             align_corners=False).transpose(0, 1)
        gray = (0.299 * clip[0] + 0.587 * clip[1] + 0.114 * clip[2]).unsqueeze(0)
        saturation = rng.uniform(1 - settings.saturation, 1 + settings.saturation)
        clip = gray + saturation * (clip - gray)
        contrast = rng.uniform(1 - settings.contrast, 1 + settings.contrast)
        clip = clip.mean() + contrast * (clip - clip.mean())
        clip = clip * rng.uniform(1 - settings.brightness, 1 + settings.brightness)
        out[i] = clip
    return out.clamp_(0.0, 1.0)


def pool_frames(frames: int, settings: TrainSettings) -> int:
    """Frames to decode per training clip: 2 x frames - 1 with temporal jitter (the pool's even
    indices are the `frames` that inference samples), else `frames`."""
    return 2 * frames - 1 if settings.temporal_jitter > 0 else frames


def jitter_time(clips: np.ndarray, frames: int, rng: np.random.Generator,
                settings: TrainSettings) -> np.ndarray:
    """uint8 pools [B, P, H, W, 3] -> clips [B, frames, H, W, 3]: per clip, `frames` evenly spaced
    frames over a random stretch of its pool. Time keeps its order, so motion keeps its direction;
    only its speed per frame changes. Pools no longer than `frames` are returned as they are."""
    pool = clips.shape[1]
    if pool <= frames:
        return clips
    picked = []
    for clip in clips:
        span = (pool - 1) * rng.uniform(1.0 - settings.temporal_jitter, 1.0)
        start = rng.uniform(0.0, pool - 1 - span)
        picked.append(clip[np.rint(np.linspace(start, start + span, frames)).astype(int)])
    return np.stack(picked)


def build_optimizer(model: nn.Module, settings: TrainSettings) -> torch.optim.Optimizer:
    """AdamW with a learning-rate scale per weight matrix (see TrainSettings.fan_in_reference);
    biases and normalisation parameters get no weight decay."""
    groups = []
    for parameter in model.parameters():
        if parameter.dim() >= 2:
            fan_in = parameter[0].numel()
            groups.append({"params": [parameter], "weight_decay": settings.weight_decay,
                           "lr_scale": min(1.0, settings.fan_in_reference / fan_in)})
        else:
            groups.append({"params": [parameter], "weight_decay": 0.0, "lr_scale": 1.0})
    return torch.optim.AdamW(groups, lr=settings.lr)


@dataclass(frozen=True)
class Schedule:
    """The learning rate per optimisation step: linear warm-up to the peak, cosine decay to zero.

    The peak is `lr` scaled with the global batch (batch_size x workers; `lr_scale`: linear up
    to 16 clips, flat beyond), so adding workers needs no hand-tuned --lr."""

    settings: TrainSettings
    world_size: int
    steps_per_epoch: int

    @property
    def epochs(self) -> int:
        """Epochs to run: `settings.epochs`, or more where that gives under `min_steps` steps."""
        return max(self.settings.epochs, -(-self.settings.min_steps // self.steps_per_epoch))

    @property
    def peak(self) -> float:
        return self.settings.lr * lr_scale(self.settings.batch_size * self.world_size)

    def lr_at(self, step: int) -> float:
        warmup = max(1, round(self.settings.warmup_epochs * self.steps_per_epoch))
        total = max(warmup + 1, self.epochs * self.steps_per_epoch)
        if step < warmup:
            return self.peak * (step + 1) / warmup
        progress = min(1.0, (step - warmup) / (total - warmup))
        return float(self.peak * 0.5 * (1.0 + np.cos(np.pi * progress)))

    def apply(self, optimizer: torch.optim.Optimizer, step: int) -> None:
        lr = self.lr_at(step)
        for group in optimizer.param_groups:
            group["lr"] = lr * group.get("lr_scale", 1.0)


def steps_per_epoch(clips: int, batch_size: int, world_size: int = 1) -> int:
    """Optimisation steps per epoch on each worker (Ray Train gives each an equal shard)."""
    return max(1, -(-(clips // world_size) // batch_size))


def train_step(model: nn.Module, optimizer: torch.optim.Optimizer, clips: np.ndarray,
               labels: np.ndarray, settings: TrainSettings, rng: np.random.Generator,
               device: torch.device | str = "cpu", frames: int | None = None,
               scaler: torch.amp.GradScaler | None = None) -> tuple[float, int]:
    """One optimisation step on an augmented batch; returns (summed loss, correct predictions).
    `frames`: the model's clip length where `clips` are longer pools (see jitter_time).
    `scaler` (devices.grad_scaler): mixed precision, the forward pass in float16 under autocast
    and the loss scaled so that small float16 gradients do not underflow to zero."""
    if frames is not None:
        clips = jitter_time(clips, frames, rng, settings)
    inputs = augment(clips, rng, settings).to(device)
    targets = torch.from_numpy(labels).to(device)
    optimizer.zero_grad()
    with devices.autocast(torch.device(device), enabled=scaler is not None):
        logits = model(inputs)
        loss = nn.functional.cross_entropy(logits, targets)  # autocast computes it in float32
    if scaler is None:
        loss.backward()
        optimizer.step()
    else:
        scaler.scale(loss).backward()
        scaler.step(optimizer)  # skipped, and the scale lowered, when a gradient overflowed
        scaler.update()
    return loss.item() * len(labels), int((logits.argmax(1) == targets).sum())


def train_epoch(model: nn.Module, optimizer: torch.optim.Optimizer, clips: np.ndarray,
                labels: np.ndarray, settings: TrainSettings, rng: np.random.Generator,
                schedule: Schedule, first_step: int, frames: int | None = None
                ) -> tuple[float, float, float]:
    """One pass in random order; returns (mean loss, accuracy, clips/s). `frames`: as train_step."""
    model.train()
    order = rng.permutation(len(clips))
    total_loss, correct, started = 0.0, 0, time.perf_counter()
    for step, start in enumerate(range(0, len(order), settings.batch_size), start=first_step):
        index = order[start:start + settings.batch_size]
        schedule.apply(optimizer, step)
        batch_loss, batch_correct = train_step(model, optimizer, clips[index], labels[index],
                                               settings, rng, frames=frames)
        total_loss += batch_loss
        correct += batch_correct
    seconds = time.perf_counter() - started
    count = max(1, len(order))
    return total_loss / count, correct / count, len(order) / max(seconds, 1e-9)


def validation_stats(model: nn.Module, clips: np.ndarray, labels: np.ndarray) -> tuple[float, float]:
    """(accuracy, mean cross-entropy) on un-augmented clips."""
    probs = predict_probs(model, clips)
    picked = probs[np.arange(len(labels)), labels]
    loss = float(-np.log(np.clip(picked, 1e-12, None)).mean())
    return float((probs.argmax(1) == labels).mean()), loss


def fit(config: ModelConfig, train: LabelledClips, val: LabelledClips | None,
        settings: TrainSettings, on_epoch: Callable[[EpochStats], None] | None = None
        ) -> tuple[nn.Module, list[EpochStats]]:
    """Single-process training of a fresh model; returns it with per-epoch statistics."""
    if len(train.clips) == 0:
        raise InvalidInput("no training clips could be decoded")
    torch.manual_seed(settings.seed)
    rng = np.random.default_rng(settings.seed)
    model = config.build()
    optimizer = build_optimizer(model, settings)
    schedule = Schedule(settings, 1, steps_per_epoch(len(train.clips), settings.batch_size))
    history, best = [], BestEpoch()
    for epoch in range(1, schedule.epochs + 1):
        loss, accuracy, speed = train_epoch(model, optimizer, train.clips, train.labels,
                                            settings, rng, schedule,
                                            (epoch - 1) * schedule.steps_per_epoch, config.frames)
        stats = EpochStats(epoch, loss, accuracy, speed)
        if val is not None and len(val.clips):
            stats.val_accuracy, stats.val_loss = validation_stats(model, val.clips, val.labels)
        if best.offer(stats):
            best.state = {k: v.detach().clone() for k, v in model.state_dict().items()}
        history.append(stats)
        if on_epoch:
            on_epoch(stats)
    model.load_state_dict(best.state)
    model.eval()
    return model, history


def left_chance_epoch(history: list[EpochStats], num_classes: int) -> int | None:
    """The first epoch whose validation accuracy reached twice chance (None: never)."""
    return next((stats.epoch for stats in history
                 if (stats.val_accuracy or 0.0) >= 2.0 / num_classes), None)


@dataclass
class BestEpoch:
    """The epoch whose model is kept: the best validation accuracy (ties: the lower validation
    loss, then the later epoch); without validation data, the last epoch."""

    epoch: int = 0
    val_accuracy: float | None = None
    val_loss: float | None = None
    state: object = None  # what the caller keeps of that epoch's model

    def offer(self, stats: EpochStats) -> bool:
        """Take `stats` if it beats the kept epoch; True when it does."""
        if stats.val_accuracy is not None and self.val_accuracy is not None:
            better = (stats.val_accuracy, -stats.val_loss) >= (self.val_accuracy, -self.val_loss)
        else:
            better = True
        if better:
            self.epoch, self.val_accuracy, self.val_loss = (stats.epoch, stats.val_accuracy,
                                                            stats.val_loss)
        return better


# --- the distributed engine: Ray Train ----------------------------------------------------------

STATE_FILE = "train_state.pt"  # model + optimizer + epoch + history: what a resumed run needs


@dataclass(frozen=True)
class RunSpec:
    """Where a Ray Train run lives and how it is scaled. The same (storage_path, name) resumes."""

    storage_path: str
    name: str
    workers: int = 1
    use_gpu: bool = False
    max_failures: int = 1  # worker crashes recovered from the last checkpoint within one command
    checkpoints_to_keep: int = 2


@dataclass
class TrainResult:
    model: nn.Module
    checkpoint: bytes  # a vidpipe checkpoint of the kept model (models/checkpoint.py)
    history: list[EpochStats]
    best_epoch: int  # the epoch kept: best on validation, else the last
    resumed_from_epoch: int  # 0 when the run started fresh
    run_path: str
    nodes: list[str]  # Ray node ids the workers ran on (in the last attempt)


def train_distributed(config: ModelConfig, train_clips, val_clips, settings: TrainSettings,
                      run: RunSpec, mlflow: dict | None = None) -> TrainResult:
    """Train `config` on Ray Train workers; `train_clips`/`val_clips` are clip datasets (clips.py).

    `mlflow` ({"tracking_uri", "run_id"}) makes rank 0 log per-epoch metrics to that run; an MLflow
    outage is logged by the worker and never stops training. The URI must carry no credentials:
    the loop config is exported by Ray; they reach the workers through the object store.
    """
    import ray.train
    from ray.train.torch import TorchTrainer

    from .credentials import for_workers
    from .redact import redact_uri
    from .models.checkpoint import load_checkpoint

    if mlflow:
        mlflow = {**mlflow, "tracking_uri": redact_uri(mlflow["tracking_uri"]),
                  "credentials": for_workers()}
    datasets = {"train": shuffled_every_epoch(train_clips)}
    if val_clips is not None:
        datasets["val"] = val_clips
    trainer = TorchTrainer(
        _train_worker,
        train_loop_config={"model": config.to_dict(), "settings": settings.__dict__,
                           "mlflow": mlflow,
                           "steps_per_epoch": steps_per_epoch(train_clips.count(),
                                                              settings.batch_size, run.workers)},
        scaling_config=ray.train.ScalingConfig(num_workers=run.workers, use_gpu=run.use_gpu),
        run_config=ray.train.RunConfig(
            name=run.name, storage_path=run.storage_path,
            failure_config=ray.train.FailureConfig(max_failures=run.max_failures),
            checkpoint_config=ray.train.CheckpointConfig(num_to_keep=run.checkpoints_to_keep),
            # Ray Train's INFO lines repeat every report; our rank 0 prints one line per epoch.
            logging_config=ray.train.LoggingConfig(log_level="WARNING")),
        datasets=datasets,
        dataset_config=ray.train.DataConfig(datasets_to_split=["train"]),
    )
    result = trainer.fit()
    if result.checkpoint is None:
        raise RuntimeError(f"training {run.name} finished without a checkpoint")
    with result.checkpoint.as_directory() as directory:
        state = torch.load(os.path.join(directory, STATE_FILE), map_location="cpu",
                           weights_only=True)
    checkpoint = state["checkpoint"]
    model, _ = load_checkpoint(checkpoint)
    history = [EpochStats(**stats) for stats in state["history"]]
    return TrainResult(model, checkpoint, history, int(state["best"]["epoch"]),
                       int(state["resumed_from_epoch"]), result.path, list(state.get("nodes", [])))


def _train_worker(loop_config: dict) -> None:
    """Runs on every Ray Train worker: DDP training, rank-0 validation, a checkpoint per epoch."""
    import ray
    import ray.train
    import ray.train.torch
    import torch.distributed as dist

    from .clips import unpack_batch
    from .models.checkpoint import checkpoint_bytes, unwrap

    _quiet_report_logs()
    config = ModelConfig.from_dict(loop_config["model"])
    settings = TrainSettings(**loop_config["settings"])
    context = ray.train.get_context()
    rank, world = context.get_world_rank(), context.get_world_size()
    torch.manual_seed(settings.seed)  # identical initial weights on every rank
    device = ray.train.torch.get_device()
    model = config.build().to(device)
    optimizer = build_optimizer(model, settings)
    scaler = devices.grad_scaler(device, settings.amp)  # None on a CPU worker: float32
    schedule = Schedule(settings, world, loop_config["steps_per_epoch"])
    start_epoch, history, resumed_from, best = 1, [], 0, BestEpoch()
    if checkpoint := ray.train.get_checkpoint():
        with checkpoint.as_directory() as directory:
            state = torch.load(os.path.join(directory, STATE_FILE), map_location="cpu",
                               weights_only=True)
        restore_training_state(model, optimizer, state)
        history = state["history"]
        resumed_from = int(state["epoch"])
        start_epoch = resumed_from + 1
        best = BestEpoch(**state["best"], state=state["checkpoint"])
        if rank == 0:
            _progress(f"resuming from the checkpoint of epoch {resumed_from}")
    model = ray.train.torch.prepare_model(model)
    nodes = [ray.get_runtime_context().get_node_id()]
    if world > 1:  # where the workers run, for the summary (a multi-node run shows several)
        gathered = [None] * world
        dist.all_gather_object(gathered, nodes[0])
        nodes = gathered
    tracker = _EpochTracker(loop_config.get("mlflow")) if rank == 0 else None
    train_shard = ray.train.get_dataset_shard("train")
    val_arrays = _validation_arrays(config) if rank == 0 else None  # decoded once, not per epoch

    for epoch in range(start_epoch, schedule.epochs + 1):
        rng = np.random.default_rng([settings.seed, epoch, rank])  # a resumed epoch replays its randomness
        model.train()
        loss_sum, correct, clips_seen = 0.0, 0, 0
        started = time.perf_counter()
        step = (epoch - 1) * schedule.steps_per_epoch
        for batch in training_batches(train_shard, settings.batch_size):
            # Pools of pool_frames() with temporal jitter, or clips decoded at the model's frames.
            clips, labels = unpack_batch(batch, config.class_names, None, config.size)
            schedule.apply(optimizer, step)
            step += 1
            batch_loss, batch_correct = train_step(model, optimizer, clips, labels, settings, rng,
                                                   device, config.frames, scaler)
            loss_sum, correct, clips_seen = (loss_sum + batch_loss, correct + batch_correct,
                                             clips_seen + len(labels))
        # Reduced on the process group's device (NCCL only reduces CUDA tensors).
        loss_sum, correct, clips_seen = devices.all_reduce([loss_sum, correct, clips_seen])
        (seconds,) = devices.all_reduce([time.perf_counter() - started], op="max")
        count = max(1.0, clips_seen)
        stats = EpochStats(epoch, loss_sum / count, correct / count,
                           clips_seen / max(seconds, 1e-9), seconds=seconds)
        if val_arrays is not None and len(val_arrays[0]):
            stats.val_accuracy, stats.val_loss = validation_stats(unwrap(model), *val_arrays)
            model.train()
        history.append(stats.__dict__)
        metrics = {k: v for k, v in stats.__dict__.items() if v is not None}
        if rank != 0:
            ray.train.report(metrics)
            continue
        _progress(f"epoch {epoch}/{schedule.epochs}: loss={stats.loss:.4f} acc={stats.accuracy:.3f}"
                  + (f" val_acc={stats.val_accuracy:.3f}" if stats.val_accuracy is not None else "")
                  + f" clips/s={stats.clips_per_s:.1f}")
        tracker.log(stats)
        bare = unwrap(model)
        if best.offer(stats):
            best.state = checkpoint_bytes(bare, config)
        state = {**training_state(bare, optimizer), "epoch": epoch, "history": history,
                 "resumed_from_epoch": resumed_from, "nodes": sorted(set(nodes)),
                 "checkpoint": best.state,  # the model kept: the best epoch on validation
                 "best": {"epoch": best.epoch, "val_accuracy": best.val_accuracy,
                          "val_loss": best.val_loss}}
        with tempfile.TemporaryDirectory() as directory:
            torch.save(state, os.path.join(directory, STATE_FILE))
            ray.train.report(metrics, checkpoint=ray.train.Checkpoint.from_directory(directory))


# The training order: clips in blocks of ROWS_PER_BLOCK, a random block order every epoch, and a
# local buffer of SHUFFLE_BUFFER clips on each worker (see shuffled_every_epoch).
ROWS_PER_BLOCK = 4
SHUFFLE_BUFFER = 256


def shuffled_every_epoch(clips):
    """The training clip dataset, which Ray Train executes anew every epoch (each worker's
    `get_dataset_shard` is a streaming split of this plan), arranged so that every epoch mixes
    classes in a new order, on 1 worker or N, however large the corpus.

    The listing is sorted by URI, i.e. by class, so a local shuffle buffer alone sees one to
    three classes at a time on a corpus of thousands of clips. Here the clips are cut once into
    blocks of ROWS_PER_BLOCK (materialized: a second copy in the object store, never in a heap),
    and every epoch takes those blocks in a new random order (`randomize_block_order`, unseeded:
    a metadata shuffle in the driver, no tasks and no data moved); `training_batches` then draws
    batches from a buffer of SHUFFLE_BUFFER clips, i.e. from about 64 random blocks from all over
    the corpus. A full `random_shuffle` every epoch gives the same mix but moves every clip
    through map and reduce tasks each epoch: 126 clips trained at 15 clips/s on 2 cores, against
    40-57 with this. Unseeded: Ray does not make the row order, or which worker gets which block,
    reproducible anyway, and a seeded order would restart at epoch 1's when a run resumes."""
    blocks = max(1, -(-clips.count() // ROWS_PER_BLOCK))
    return clips.repartition(blocks).materialize().randomize_block_order()


def training_batches(shard, batch_size: int):
    """One epoch of numpy batches from a worker's shard of `shuffled_every_epoch`, drawn at
    random from a buffer of SHUFFLE_BUFFER clips (a new draw every epoch)."""
    return shard.iter_batches(batch_size=batch_size, batch_format="numpy",
                              local_shuffle_buffer_size=SHUFFLE_BUFFER)


def training_state(model: nn.Module, optimizer: torch.optim.Optimizer) -> dict:
    """Model and optimizer state for a checkpoint, on the CPU whatever device trained them."""
    def to_cpu(value):
        if torch.is_tensor(value):
            return value.detach().cpu()
        if isinstance(value, dict):
            return {k: to_cpu(v) for k, v in value.items()}
        if isinstance(value, list):
            return [to_cpu(v) for v in value]
        return value

    return {"model": to_cpu(unwrap(model).state_dict()),
            "optimizer": to_cpu(optimizer.state_dict())}


def restore_training_state(model: nn.Module, optimizer: torch.optim.Optimizer, state: dict) -> None:
    """Load a `training_state` into a model already on its device and the optimizer built over it.

    The order matters on a GPU: the optimizer casts its loaded state to its parameters' device,
    so the model must be there first, or Adam's moments stay on the CPU."""
    model.load_state_dict(state["model"])
    optimizer.load_state_dict(state["optimizer"])


def _progress(message: str) -> None:
    # stderr: Ray forwards it to the driver's stderr, keeping the driver's stdout for --json.
    # Written to the stream itself: Ray Train patches `print` on its workers to log every line
    # a second time through its own logger.
    sys.__stderr__.write(message + "\n")
    sys.__stderr__.flush()


def _quiet_report_logs() -> None:
    """Ray Train 2.60 logs every report (metrics dict included) at INFO through a logger named by
    its file path, outside the `ray.train` hierarchy that LoggingConfig controls. Rank 0 already
    prints one line per epoch, so keep those to warnings."""
    try:
        from ray.train.v2._internal.execution import context
    except ImportError:  # another Ray version: its logs stay as they are
        return
    logging.getLogger(context.__file__).setLevel(logging.WARNING)


def _validation_arrays(config: ModelConfig) -> tuple[np.ndarray, np.ndarray] | None:
    """Rank 0 only: the whole (unsplit) validation dataset as arrays, or None without one."""
    import ray.train

    from .clips import to_arrays

    try:
        val_shard = ray.train.get_dataset_shard("val")
    except KeyError:  # Ray Train 2.60 raises for a dataset it was not given (older: None)
        return None
    if val_shard is None:
        return None
    clips, labels, _ = to_arrays(val_shard, config.class_names, config.frames, config.size)
    return clips, labels


class _EpochTracker:
    """Per-epoch metrics to an existing MLflow run; an unreachable server costs a warning, not the run."""

    def __init__(self, target: dict | None):
        self.target = target
        self.failed = False
        # This process is a dedicated Ray worker: fail fast instead of MLflow's minutes of retries.
        os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "2")

    def log(self, stats: EpochStats) -> None:
        if not self.target or self.failed:
            return
        try:
            from mlflow import MlflowClient

            from .credentials import use_on_worker
            from .tracking import metric_batch

            use_on_worker(self.target.get("credentials"))

            client = MlflowClient(tracking_uri=self.target["tracking_uri"])
            metrics = {key: value for key, value in stats.__dict__.items()
                       if key != "epoch" and value is not None}
            client.log_batch(self.target["run_id"], metrics=metric_batch(metrics, stats.epoch))
        except Exception as exc:  # training must survive a tracking outage
            self.failed = True
            _progress(f"warning: MLflow unreachable, epoch metrics not logged from now on "
                      f"({type(exc).__name__}); checkpoints are unaffected")
