"""The GPU decoding path (issue 22) on the CPU: which decoder a run takes, the GPU actors' decode
with its per-video CPU fallback, and the accounting of fallbacks in rows and run records.

No GPU here: `SoftwareNvdec` (tests/nvdec_double.py) STANDS IN FOR NVDEC. It decodes in software
but hands frames to the GPU path's own conversion in NVDEC's output layout (NV12 planes through
DLPack) and refuses what NVDEC's decoders refuse (streams that are not 4:2:0), so everything but
the decoding engine runs as on a GPU: decode_nvdec's conversion, segments.FallbackWindows,
inference.DecodingClassifierActor in a Ray actor pool, the counting. The real NVDEC runs the same
checks in tests/gpu/test_nvdec_cuda.py (make test-gpu)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pyarrow.parquet as pq
import pytest
import torch
from checkpoints import untrained_checkpoint
from nvdec_double import SoftwareNvdec
from videos import write_lossless_index_video, write_testsrc

from pipeline.cli import main as vidpipe
from pipeline.decoder_choice import resolve
from pipeline.errors import DecoderUnavailable

sys.path.insert(0, str(Path(__file__).parent / "gpu"))

import nvdec_checks  # noqa: E402


@pytest.fixture
def one_torch_thread():
    """As the actors run (inference.py): on 2 shared cores, two threads made the small matrix
    products of the conversion ~500x slower."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def model(tmp_path_factory) -> Path:
    return untrained_checkpoint(tmp_path_factory.mktemp("model") / "model.pt", ("A", "B", "C"),
                                seed=3, frames=8, size=48)


def test_decoder_choice():
    def unusable():
        return "no libnvcuvid"

    def usable():
        return None

    def never():  # CPU decoders and CPU clusters must not probe the GPUs
        raise AssertionError("probed")

    said = []
    assert resolve("auto", False, never) == "pyav"  # a CPU cluster is unchanged
    assert resolve("pyav", True, never) == "pyav"
    assert resolve("ffmpeg", True, never) == "ffmpeg"
    assert resolve("auto", True, usable) == "nvdec"
    assert resolve("nvdec", True, usable) == "nvdec"
    assert resolve("auto", True, unusable, said.append) == "pyav"
    assert said and "no libnvcuvid" in said[0]  # auto says why it did not take NVDEC
    with pytest.raises(DecoderUnavailable, match="no GPUs"):
        resolve("nvdec", False, never)
    with pytest.raises(DecoderUnavailable, match="cannot decode on NVDEC: no libnvcuvid"):
        resolve("nvdec", True, unusable)


def test_gpu_path_frames_equal_the_cpu_paths_with_seeking(tmp_path, one_torch_thread):
    worst = nvdec_checks.frames_match_cpu(SoftwareNvdec(), tmp_path)
    assert worst["clips"] == 7  # six 4 s windows of 600 frames, and the whole video


def test_stream_the_gpu_decoder_refuses_is_decoded_on_the_cpu(tmp_path, one_torch_thread):
    nvdec_checks.fallback_on_unsupported_stream(SoftwareNvdec(), tmp_path)


def test_on_a_cpu_cluster_auto_is_pyav_and_nvdec_a_usage_error(ray_local, tmp_path, capsys,
                                                                model):
    """A CPU cluster (the session's Ray) has no GPUs: `auto` decodes with PyAV as before, and
    `nvdec` is one line, exit 2, with no OUTPUT left."""
    from pipeline import decoder_choice

    assert decoder_choice.choose("auto") == "pyav"
    (tmp_path / "in").mkdir()
    video = write_testsrc(tmp_path / "in" / "a.mp4", 1)
    capsys.readouterr()
    code = vidpipe(["classify", str(video.parent), str(tmp_path / "out"), "--model", str(model),
                    "--decoder", "nvdec"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2
    assert err[-1].startswith("vidpipe: error: --decoder nvdec needs GPU workers"), err
    assert not (tmp_path / "out").exists()


def test_gpu_actors_decode_fall_back_and_count_it(ray_local, tmp_path, bad_videos,
                                                  one_torch_thread, model):
    """The GPU shape (inference.DecodingClassifierActor in an actor pool) with the stand-in on
    CPU actors: H.264 videos are decoded by it ('nvdec'), the FFV1 one falls back ('cpu') and
    counts once, an unreadable one is an error row; the rows match the CPU path's."""
    import ray

    import nvdec_double
    from pipeline.inference import classify, classify_sequential

    inputs = tmp_path / "in"
    inputs.mkdir()
    write_testsrc(inputs / "long.mp4", seconds=5, size="128x96", fps=10)
    write_testsrc(inputs / "short.mp4", seconds=2, size="96x64", fps=25)
    write_lossless_index_video(inputs / "lossless.mkv", 40)
    (inputs / "text.mp4").write_bytes(bad_videos["text"].read_bytes())

    (tmp_path / "cpu").mkdir()
    classify_sequential(str(inputs), str(tmp_path / "cpu" / "rows.parquet"), str(model),
                        window_seconds=2)

    ray.cloudpickle.register_pickle_by_value(nvdec_double)  # the stand-in lives in tests/
    summary = classify(str(inputs), str(tmp_path / "gpu"), str(model), window_seconds=2,
                       num_actors=1, decoder="nvdec", gpu_decoder=SoftwareNvdec)
    assert (summary["decoder"], summary["decode_fallbacks"]) == ("nvdec", 1)
    assert (summary["videos"], summary["errors"]) == (4, 1)
    records = [json.loads(path.read_text()) for path in (tmp_path / "gpu" / "_runs").glob("*.json")]
    (record,) = [record for record in records if record.get("kind") == "classify"]
    assert record["decode_fallbacks"] == 1  # the committed run record carries the count

    def rows(folder):
        table = pq.read_table(tmp_path / folder).sort_by([("video_uri", "ascending"),
                                                           ("segment", "ascending")])
        return [{**row, "video_uri": Path(row["video_uri"]).name} for row in table.to_pylist()]

    gpu, cpu = rows("gpu"), rows("cpu")
    places = {(row["video_uri"], row["decoded_on"], row["status"]) for row in gpu}
    assert places == {("long.mp4", "nvdec", "ok"), ("short.mp4", "nvdec", "ok"),
                      ("lossless.mkv", "cpu", "ok"), ("text.mp4", "cpu", "error")}
    assert {row["decoded_on"] for row in cpu} == {"cpu"}
    keys = ("video_uri", "segment", "start_s", "end_s", "status", "error", "duration_s", "fps",
            "width", "height")
    assert [[row[k] for k in keys] for row in gpu] == [[row[k] for k in keys] for row in cpu]
    for on_gpu, on_cpu in zip(gpu, cpu):  # clips within a few levels: nearly equal predictions
        if on_gpu["status"] == "ok":
            assert on_gpu["top_scores"] == pytest.approx(on_cpu["top_scores"], abs=0.02)
