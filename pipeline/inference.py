"""Classification: listing -> segments -> model -> rows -> Parquet.

The stages, each usable on its own and shared by `classify` here and `scan` (scan.py):
- `listing_dataset(uri)` (listing.py): the listed videos (storage.LISTING_SCHEMA) as a Ray
  dataset in blocks of about a hundred, listed by tasks: the driver only ever sees folder names;
- `predictions(videos, loaded)`: on CPU clusters, tasks that read, decode and classify a block
  of videos each (`classify_task`); on GPU clusters, decode tasks (segments.decode_task) feeding
  classifier actors. Prediction rows (rows.PREDICTION_SCHEMA) plus `retry`, True on rows of
  videos whose storage read failed;
- `stage_rows(rows, staging, schema)`: the committed writer's first half, Parquet files staged
  by tasks (commit.write_staged); it returns the manifest, one row per file. commit.commit
  publishes them. `schema` is rows.prediction_schema(embeddings): with or without `embedding`.

`Classifier` (segment records -> rows) and `classify_sequential` are the same steps without Ray.

Torch is imported only by the code that runs the model (Classifier and the steps that make one),
never at the top: a command's driver plans and ships the checkpoint's bytes, and torch's import
was a second of every small `classify`.
"""

from __future__ import annotations

import math
import os
import posixpath
import time
from collections.abc import Iterable

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from . import commit, storage
from .errors import TooManyErrors
from .frames import DEFAULT_DECODER, DEFAULT_TIMEOUT_S
from .infrastructure import check_model_on_nodes, check_nodes
from .listing import listing_dataset
from .model_store import LoadedModel, load_model
from .progress import Progress, mark, report, report_node
from .rows import (error_row, is_first_row, parquet_options, prediction_row, prediction_schema,
                   rows_to_table)
from .segments import FallbackWindows, VideoWindows, clip_arrays, decode_task, decode_video

ROWS_PER_FILE = 50_000  # prediction rows per Parquet file
VIDEOS_PER_DECODE_TASK = 4  # small: decoding is the slow part, spread it over every CPU
VIDEOS_PER_CLASSIFY_TASK = 16  # decode + classify in one task (CPU clusters): ~0.7 s of short clips
DECODE_MEMORY = 256 * 1024 * 1024  # bytes reserved per decode task


class Classifier:
    """Loads the model once; maps a list of segment records to prediction rows (with embeddings
    unless `embeddings` is False)."""

    def __init__(self, loaded: LoadedModel, device: str = "cpu", embeddings: bool = True):
        from .models import TOP_K, for_inference, predict  # torch (see the module docstring)

        self.model = for_inference(loaded.model, device)  # BatchNorm folded; channels-last on CPU
        self.top_k, self._predict = TOP_K, predict
        self.config = loaded.config
        self.lineage = loaded.lineage
        self.device = device
        self.embeddings = embeddings
        self.schema = prediction_schema(embeddings)

    def rows(self, records: list[dict]) -> list[dict]:
        """One prediction row per record, in record order; error records become error rows."""
        ok = [r for r in records if r["error"] is None]
        clips = clip_arrays((r["clip"] for r in ok), self.config.frames, self.config.size)
        outputs = iter(self.predictions(clips) if ok else [])
        return [self.row(r, *(next(outputs) if r["error"] is None else (None, None)))
                for r in records]

    def predictions(self, clips: np.ndarray) -> list[tuple[np.ndarray, np.ndarray | None]]:
        """(class probabilities [C], embedding or None) per uint8 clip of [N, T, H, W, 3] (an
        array, or a tensor decoded on the model's device), all in one call."""
        out = self._predict(self.model, clips, batch_size=len(clips), embeddings=self.embeddings)
        embeddings = out.embeddings if self.embeddings else [None] * len(out.probs)
        return list(zip(out.probs, embeddings))

    def row(self, record: dict, probs: np.ndarray | None,
            embedding: np.ndarray | None = None) -> dict:
        """The row of one segment record, its probabilities and embedding (an error row for an
        error record)."""
        if record["error"] is not None:
            return error_row(record, record["error"], self.lineage)
        return prediction_row(record, probs, self.config.class_names, self.lineage, self.top_k,
                              embedding)

    def table(self, rows: list[dict]) -> pa.Table:
        return rows_to_table(rows, self.schema)


def classify_sequential(input_uri: str, output_path: str, model_ref: str,
                        window_seconds: float | None = None, batch_size: int = 16,
                        mlflow_uri: str | None = None, decoder: str = DEFAULT_DECODER,
                        embeddings: bool = True) -> dict:
    """The plain one-process loop: list, decode, classify, write one Parquet file."""
    started = time.perf_counter()
    classifier = Classifier(load_model(model_ref, mlflow_uri), embeddings=embeddings)
    config = classifier.config
    window_seconds = config.window_seconds(window_seconds)
    rows, pending = [], []
    videos = storage.list_videos(input_uri)
    for video in videos:
        listed = {"video_uri": video.uri, "video_etag": video.etag, "video_bytes": video.size}
        pending += decode_video(listed, config.frames, config.size, window_seconds,
                                decoder=decoder)
        if len(pending) >= batch_size:
            rows += classifier.rows(pending)
            pending = []
    rows += classifier.rows(pending)
    fs, path = storage.filesystem(output_path)
    fs.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    with fs.open(path, "wb") as handle:
        table = classifier.table(rows)
        pq.write_table(table, handle, **parquet_options(table.schema))
    seconds = time.perf_counter() - started
    errors = sum(row["status"] == "error" for row in rows)
    return {"videos": len(videos), "segments": len(rows) - errors, "errors": errors,
            "wall_s": round(seconds, 3), "videos_per_s": round(len(videos) / seconds, 3),
            "output": output_path}


# --- the distributed stages: Ray Data ---------------------------------------------------------


def predictions(videos, loaded: LoadedModel, window_seconds: float | None = None,
                batch_size: int = 16, num_actors: int | None = None, progress=None,
                decoder: str = DEFAULT_DECODER, decode_timeout_s: float = DEFAULT_TIMEOUT_S,
                video_count: int | None = None, gpu_decoder=None, embeddings: bool = True):
    """Listed videos (a Ray dataset with the LISTING_SCHEMA columns) -> prediction rows
    (rows.prediction_schema(embeddings)) plus `retry`. `window_seconds`: None = the model's
    training clip duration, 0 = whole videos.

    Two shapes of the same steps (a listed video decoded by segments.py, then Classifier):
    - CPU clusters (the default there): each task decodes a block of videos and classifies their
      clips in the same process (`classify_task`), one torch thread per task, so every CPU both
      decodes and classifies and clips never cross the object store. The model is loaded once
      per worker process from one object-store copy of the checkpoint.
    - GPU clusters, or `num_actors` given: decode tasks feed a pool of classifier actors (one per
      GPU by default), so the GPUs classify while the CPUs decode.
    - `decoder` "nvdec" (decoder_choice.py: GPU clusters whose GPUs decode): a pool of actors
      (one per GPU) that read, decode on NVDEC and classify their blocks of videos themselves
      (DecodingClassifierActor); `gpu_decoder` is its decoder class (decode_nvdec.NvdecDecoder;
      a test stand-in runs this shape on CPU actors).

    `progress`: a progress.Progress handle (counts and the nodes that did work);
    `decoder`: one of frames.DECODERS; `decode_timeout_s`: the decode deadline per started minute
    of video (frames.DEFAULT_TIMEOUT_S); `video_count`: how many videos `videos` holds, where the
    caller knows (a scan does): fewer than VIDEOS_PER_CLASSIFY_TASK per CPU are then spread over
    every CPU rather than packed into a few tasks."""
    import ray

    from .ray_runtime import cluster_has_gpus

    config = loaded.config
    gpus = cluster_has_gpus()
    decode = {"frames": config.frames, "size": config.size,
              "window_seconds": config.window_seconds(window_seconds), "progress": progress,
              "decoder": decoder, "timeout_s": decode_timeout_s}
    listed = videos.select_columns(list(storage.LISTING_SCHEMA.names))
    cpus = int(ray.cluster_resources().get("CPU", 1))
    if not gpus and num_actors is None:
        # Ray Data's per-operator reservation splits the CPUs among the chain's operators (on 2
        # CPUs this step got one task at a time, half the machine); here one step does nearly all
        # the work and the steps after it only write small rows, so it may take every free CPU.
        # The setting belongs to this chain's context (shared with `videos`), not the process's.
        listed.context.op_resource_reservation_enabled = False
        return (
            listed.repartition(target_num_rows_per_block=videos_per_task(video_count, cpus))
            .map_batches(classify_task, batch_size=None, batch_format="pyarrow", num_cpus=1,
                         memory=DECODE_MEMORY,
                         fn_kwargs={**decode, "checkpoint": loaded.checkpoint_ref,
                                    "lineage": loaded.lineage, "batch_size": batch_size,
                                    "embeddings": embeddings})
        )
    actors = num_actors or int(ray.cluster_resources().get("GPU", 1))
    if decoder == "nvdec":
        return (
            listed.repartition(target_num_rows_per_block=VIDEOS_PER_DECODE_TASK)
            .map_batches(DecodingClassifierActor, batch_size=None, batch_format="pyarrow",
                         compute=ray.data.ActorPoolStrategy(min_size=1, max_size=actors),
                         fn_constructor_kwargs={
                             "checkpoint": loaded.checkpoint, "lineage": loaded.lineage,
                             "frames": config.frames, "size": config.size,
                             "window_seconds": decode["window_seconds"],
                             "device": "cuda" if gpus else "cpu", "gpu_decoder": gpu_decoder,
                             "batch_size": batch_size, "timeout_s": decode_timeout_s,
                             "progress": progress, "embeddings": embeddings},
                         num_cpus=1, num_gpus=1 if gpus else 0)
        )
    # Torch threads per CPU actor: the CPUs the actors would share if decoding took none. Decode
    # tasks (1 CPU each, as reserved) then share cores with them.
    threads = 1 if gpus else max(1, cpus // actors)
    return (
        listed.repartition(target_num_rows_per_block=VIDEOS_PER_DECODE_TASK)
        # Decoding reserves memory (a video's bytes and frames); besides being true, that keeps
        # Ray Data from fusing it into the classifier actors, which would leave decoding to the
        # actor pool's few CPUs instead of every free one.
        .map_batches(decode_task, batch_size=None, batch_format="pyarrow", num_cpus=1,
                     memory=DECODE_MEMORY, fn_kwargs=decode)
        .map_batches(ClassifierActor, batch_size=batch_size, batch_format="pyarrow",
                     compute=ray.data.ActorPoolStrategy(min_size=1, max_size=actors),
                     fn_constructor_kwargs={"checkpoint": loaded.checkpoint,
                                            "lineage": loaded.lineage,
                                            "device": "cuda" if gpus else "cpu",
                                            "threads": threads, "progress": progress,
                                            "embeddings": embeddings},
                     num_cpus=1, num_gpus=1 if gpus else 0)
    )


def videos_per_task(video_count: int | None, cpus: int) -> int:
    """Videos per classify task: VIDEOS_PER_CLASSIFY_TASK, or fewer where a known count would
    otherwise leave CPUs idle (24 videos on 4 CPUs: 6 per task, not 16 + 8 on two CPUs)."""
    if not video_count:
        return VIDEOS_PER_CLASSIFY_TASK
    return max(1, min(VIDEOS_PER_CLASSIFY_TASK, math.ceil(video_count / max(1, cpus))))


def _rows_with_retry(classifier: Classifier, rows: list[dict], records: list[dict],
                     progress) -> pa.Table:
    """The rows of `records` (one each, in order) as a table plus the records' `retry`; counts
    the videos they finish (a video's first segment, or its one error record, is segment 0)."""
    report(progress, "done", sum(is_first_row(record) for record in records))
    return classifier.table(rows).append_column(
        "retry", pa.array([record["retry"] for record in records], pa.bool_()))


class ClassifierActor:
    """map_batches step: loads the model once per actor, turns segment batches into rows."""

    def __init__(self, checkpoint: bytes, lineage, device: str = "cpu", threads: int = 1,
                 progress=None, embeddings: bool = True):
        import torch

        from .model_store import from_checkpoint_bytes

        torch.set_num_threads(threads)
        self.classifier = Classifier(from_checkpoint_bytes(checkpoint, lineage), device,
                                     embeddings)
        self.progress = progress

    def __call__(self, batch: pa.Table) -> pa.Table:
        report_node(self.progress)
        records = batch.to_pylist()
        return _rows_with_retry(self.classifier, self.classifier.rows(records), records,
                                self.progress)


# (checkpoint ref, embeddings, its classifier) per process
_worker_classifier: tuple[str, bool, Classifier] | None = None


def _classifier_for(checkpoint, lineage, embeddings: bool) -> Classifier:
    """This worker process's classifier for the checkpoint behind the object ref `checkpoint`:
    fetched and loaded by the first task of a job that lands here, reused by the rest."""
    import ray
    import torch

    from .model_store import from_checkpoint_bytes

    global _worker_classifier
    if _worker_classifier is None or _worker_classifier[:2] != (checkpoint.hex(), embeddings):
        torch.set_num_threads(1)  # one task per CPU: more threads would only contend
        loaded = from_checkpoint_bytes(ray.get(checkpoint), lineage)
        _worker_classifier = (checkpoint.hex(), embeddings, Classifier(loaded,
                                                                       embeddings=embeddings))
    return _worker_classifier[2]


def classify_task(videos: pa.Table, checkpoint, lineage, frames: int, size: int,
                  window_seconds: float | None, progress=None, batch_size: int = 16,
                  decoder: str = DEFAULT_DECODER, timeout_s: float = DEFAULT_TIMEOUT_S,
                  embeddings: bool = True) -> Iterable[pa.Table]:
    """Ray Data step of CPU clusters: a block of listed videos -> prediction rows plus `retry`,
    decoded and classified in this process (`checkpoint`: an object ref to the checkpoint bytes).

    Windows are classified as they are decoded, `batch_size` at a time (segments.VideoWindows),
    so memory holds a batch of clips however long a video is; a video's rows are made once all
    its windows are decoded and classified, so a video that fails halfway is still one error
    row and nothing else."""
    from . import faults

    mark("task started")
    report_node(progress)
    faults.pause("decoding")
    classifier = _classifier_for(checkpoint, lineage, embeddings)
    mark("model loaded")
    yield from _classified(
        videos, classifier, batch_size, progress, np.stack,
        lambda video: VideoWindows(video, frames, size, window_seconds, timeout_s=timeout_s,
                                   decoder=decoder))


def _classified(videos: pa.Table, classifier: Classifier, batch_size: int, progress, stack,
                windows_of) -> Iterable[pa.Table]:
    """Rows plus `retry` of a block of listed videos, each decoded by `windows_of(video)` (a
    segments.VideoWindows or FallbackWindows), `batch_size` windows per model call (`stack`
    makes the batch of their clips). Windows are classified as they are decoded, so memory holds
    a batch of clips however long a video is; a video's rows are made once all its windows are
    decoded and classified, from its final `records`: a video that fails halfway is one error
    row, and windows not among them (a GPU pass that fell back) are dropped."""
    waiting: list[tuple[dict, object]] = []  # decoded windows the model has not seen yet
    decoded: list = []  # videos whose rows have not been made yet

    def classify_waiting() -> None:
        if waiting:
            outputs = classifier.predictions(stack([clip for _, clip in waiting]))
            for (window, _), (probs, embedding) in zip(waiting, outputs):
                window["probs"], window["embedding"] = probs, embedding
            waiting.clear()

    def rows_of(done: list) -> pa.Table:
        records = [record for video in done for record in video.records]
        rows = [classifier.row(r, r.get("probs"), r.get("embedding")) for r in records]
        return _rows_with_retry(classifier, rows, records, progress)

    for video in videos.select(["video_uri", "video_etag", "video_bytes"]).to_pylist():
        windows = windows_of(video)
        for window, clip in windows:
            waiting.append((window, clip))
            if len(waiting) >= batch_size:
                classify_waiting()
        decoded.append(windows)
        if not waiting or len(decoded) >= batch_size:
            classify_waiting()
            yield rows_of(decoded)
            decoded = []
    classify_waiting()
    if decoded:
        yield rows_of(decoded)


class DecodingClassifierActor:
    """map_batches step of GPU clusters with `--decoder nvdec` (or `auto` where NVDEC works):
    each actor reads its block of listed videos, decodes the sampled frames on its GPU's decoder
    and classifies them there (clips never leave the device, nor cross the object store). A
    video the GPU decoder cannot take is decoded on this actor's CPU instead (FallbackWindows),
    its rows saying `decoded_on='cpu'`.

    `device`: where the model and the decoder run ("cuda" on GPU clusters; the CPU in tests);
    `gpu_decoder`: the decoder class, called with `device` (decode_nvdec.NvdecDecoder; tests pass
    a software stand-in)."""

    def __init__(self, checkpoint: bytes, lineage, frames: int, size: int,
                 window_seconds: float | None, device: str = "cuda", gpu_decoder=None,
                 batch_size: int = 16, timeout_s: float = DEFAULT_TIMEOUT_S,
                 progress=None, embeddings: bool = True):
        import torch

        from .decode_nvdec import NvdecDecoder
        from .model_store import from_checkpoint_bytes

        torch.set_num_threads(1)  # the CPU only decodes fallbacks here
        self.classifier = Classifier(from_checkpoint_bytes(checkpoint, lineage), device,
                                     embeddings)
        self.decoder = (gpu_decoder or NvdecDecoder)(device)
        self.device = torch.device(device)
        self.decode = {"frames": frames, "size": size, "window_seconds": window_seconds,
                       "timeout_s": timeout_s}
        self.batch_size, self.progress = batch_size, progress

    def __call__(self, videos: pa.Table) -> Iterable[pa.Table]:
        report_node(self.progress)
        yield from _classified(videos, self.classifier, self.batch_size, self.progress,
                               self.stack, self.windows)

    def windows(self, video: dict) -> FallbackWindows:
        return FallbackWindows(video, gpu_decoder=self.decoder, **self.decode)

    def stack(self, clips: list) -> torch.Tensor:
        """One batch on the device of clips decoded there (tensors) and on the CPU (arrays)."""
        import torch

        return torch.stack([torch.as_tensor(clip).to(self.device) for clip in clips])


def stage_rows(rows, staging: str, keep_retry: bool, schema: pa.Schema, state_rows=None,
               rows_per_file: int = ROWS_PER_FILE) -> list[dict]:
    """Write prediction rows of `schema` (rows.prediction_schema) as Parquet files under
    `staging` (tasks, commit.write_staged) and return the manifest: one dict per batch, in no
    particular order; a batch whose rows were all left out (storage failures in a scan) has no
    data file but still counts them."""
    manifest = rows.map_batches(commit.write_staged, batch_size=rows_per_file,
                                batch_format="pyarrow",
                                fn_kwargs={"staging": staging, "keep_retry": keep_retry,
                                           "schema": schema, "state_rows": state_rows})
    return manifest.take_all()


def manifest_totals(manifest: list[dict]) -> dict:
    keys = ("rows", "segments", "ok_videos", "error_videos", "retry_videos", "cpu_ok_videos")
    return {key: sum(entry[key] for entry in manifest) for key in keys}


def decode_fallbacks(totals: dict, decoder: str) -> int:
    """Videos a GPU-decoding run (`decoder` "nvdec") decoded on the CPU because NVDEC could not:
    its ok videos whose rows say decoded_on='cpu'. Other runs decode on the CPU by choice: 0."""
    return totals["cpu_ok_videos"] if decoder == "nvdec" else 0


def staged_files(manifest: list[dict], column: str = "data_file") -> list[str]:
    """The staged files of a manifest, sorted (batches that wrote none are left out)."""
    return sorted(entry[column] for entry in manifest if entry[column])


def check_error_share(failed: int, planned: int, threshold: float, output: str) -> None:
    """Raise TooManyErrors (after the commit) when more than `threshold` of the planned videos
    could not be read, undecodable or storage failures alike."""
    if planned and failed / planned > threshold:
        raise TooManyErrors(f"{failed} of {planned} videos could not be read (threshold "
                            f"{threshold:.0%}); the rows of the others were committed to {output}")


def classify(input_uri: str, output_uri: str, model_ref: str, *, window_seconds: float | None = None,
             batch_size: int = 16, num_actors: int | None = None, error_threshold: float = 0.5,
             mlflow_uri: str | None = None, ray_address: str | None = None,
             rows_per_file: int = ROWS_PER_FILE, decoder: str = DEFAULT_DECODER,
             decode_timeout_s: float = DEFAULT_TIMEOUT_S, embeddings: bool = True, say=None,
             gpu_decoder=None) -> dict:
    """listing -> predictions -> committed Parquet files in OUTPUT (OUTPUT/*.parquet), with
    each ok row's `embedding` unless `embeddings` is False.

    The run holds OUTPUT's lease and commits through commit.OutputWriter, as a scan does; a
    rerun replaces the files of earlier classify runs into the same OUTPUT rather than adding to
    them. A video whose read failed on storage gets an error row (and counts in `retry`). Raises
    lease.LeaseHeld when another run writes OUTPUT, TooManyErrors after committing when the share
    of unreadable videos exceeds `error_threshold`. `decoder`: frames.DECODER_CHOICES, resolved
    by decoder_choice.py once Ray runs (DecoderUnavailable for `nvdec` where it cannot run);
    `gpu_decoder`: a stand-in for decode_nvdec.NvdecDecoder (tests), taken as usable: `nvdec`
    then runs its actor shape on whatever the cluster has.
    """
    from . import decoder_choice
    from .ray_runtime import ensure_ray

    say = say or (lambda line: None)
    started = time.perf_counter()
    loaded = load_model(model_ref, mlflow_uri)  # resolve the REF once, ship the bytes
    run_id = commit.new_run_id()
    ensure_ray(ray_address)
    if gpu_decoder is None:  # before OUTPUT is touched: a usage error leaves nothing behind
        decoder = decoder_choice.choose(decoder, say)
    check_model_on_nodes(loaded.checkpoint_ref)  # so are weights that do not load
    with commit.OutputWriter(output_uri, run_id) as writer:
        if writer.recovered:
            say(f"rolled forward crashed run(s) {', '.join(writer.recovered)}")
        # A node that cannot decode fails the job now (NVDEC's fallback is PyAV).
        check_nodes(input_uri, "pyav" if decoder == "nvdec" else decoder)
        with Progress(say) as progress:
            rows = predictions(listing_dataset(input_uri, progress.handle), loaded,
                               window_seconds, batch_size, num_actors, progress.handle,
                               decoder=decoder, decode_timeout_s=decode_timeout_s,
                               gpu_decoder=gpu_decoder, embeddings=embeddings)
            manifest = stage_rows(rows, writer.staging, keep_retry=True,
                                  schema=prediction_schema(embeddings),
                                  rows_per_file=rows_per_file)
            mark("rows staged")
            node_ids = progress.nodes()
        totals = manifest_totals(manifest)
        videos = totals["ok_videos"] + totals["error_videos"]
        if not videos:
            raise FileNotFoundError(f"no videos found under {input_uri}")
        seconds = time.perf_counter() - started
        earlier = [path for record in commit.committed_records(output_uri)
                   if record.get("kind") == "classify" for path in record.get("files", [])]
        files = [(uri, storage.join(output_uri, f"{run_id}-{posixpath.basename(uri)}"))
                 for uri in staged_files(manifest)]
        summary = {"videos": videos, "segments": totals["segments"],
                   "errors": totals["error_videos"], "retry": totals["retry_videos"],
                   "wall_s": round(seconds, 3), "videos_per_s": round(videos / seconds, 3),
                   "output": output_uri, "nodes": node_ids,
                   "model_name": loaded.lineage.model_name,
                   "model_version": loaded.lineage.model_version,
                   "recovered": writer.recovered, "decoder": decoder,
                   "decode_fallbacks": decode_fallbacks(totals, decoder)}
        writer.commit(files, {"kind": "classify", "run_id": run_id, "input": input_uri,
                              **summary, "files": [final for _, final in files]},
                      replaces=earlier)
    check_error_share(summary["errors"], videos, error_threshold, output_uri)
    return summary
