"""NVDEC on CUDA (issue 22): the GPU decoder is usable, its clips equal the CPU path's within
nvdec_checks.MAX_LEVELS on index-coded videos (seeking included), a stream it cannot take falls
back to the CPU, and the throughput of GPU decode + classify against CPU decode + GPU classify,
printed as a ratio (`make test-gpu` shows it: -rA). The same checks run on the CPU with a software
stand-in for NVDEC in tests/test_nvdec.py.

PyAV is not in a stock PyTorch image: `make gpu-wheels` (on a machine with network) puts its wheel
in gpu-wheels/, which `make test-gpu` installs."""

from __future__ import annotations

import json

import pytest
import torch

pytest.importorskip("av", reason="PyAV is missing: run `make gpu-wheels` where there is network, "
                                 "bring gpu-wheels/ along, then `make test-gpu`")

import nvdec_checks  # noqa: E402

from pipeline.decode_nvdec import NvdecDecoder, nvdec_problem  # noqa: E402

pytestmark = pytest.mark.gpu
CUDA = torch.device("cuda")


@pytest.fixture(scope="module")
def nvdec():
    problem = nvdec_problem(CUDA)
    assert problem is None, problem  # fails, with the reason, where NVDEC is not usable
    return NvdecDecoder(CUDA)


def test_nvdec_frames_equal_the_cpu_paths_with_seeking(nvdec, tmp_path):
    worst = nvdec_checks.frames_match_cpu(nvdec, tmp_path)
    print("NVDEC vs CPU clips:", json.dumps(worst))


def test_nvdec_clips_stay_on_the_gpu(nvdec, tmp_path):
    from pipeline import frames

    video = nvdec_checks.write_video(tmp_path / "a.mp4", nvdec_checks.index_coded_frames(30))
    clip = frames.sample_clip(video, 8, (64, 64), decoder=nvdec)
    assert clip.device.type == "cuda" and clip.dtype == torch.uint8


def test_unsupported_stream_falls_back_to_the_cpu(nvdec, tmp_path):
    nvdec_checks.fallback_on_unsupported_stream(nvdec, tmp_path)


def test_throughput_gpu_decode_vs_cpu_decode(nvdec, tmp_path):
    result = nvdec_checks.throughput(nvdec, CUDA, tmp_path)
    print("GPU decode + classify vs CPU decode (1 thread) + GPU classify:", json.dumps(result))
    assert result["clips"] > 0
