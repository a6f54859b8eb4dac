"""The GPU decoding backend (`--decoder nvdec`, and `auto` on GPU clusters): the sampled frames of a
video decoded on the GPU's video decoder (NVDEC) and turned into a uint8 clip on the GPU, where the
classifier runs; nothing crosses to host memory or the object store.

Why PyAV's own `hwaccel` (since PyAV 14.1; frames kept on the device and their DLPack export as
used here: 18.1, the pin): PyAV's PyPI wheels bundle an FFmpeg built with
NVDEC (`av.codec.hwaccel.hwdevices_available()` lists 'cuda'; `av.codecs_available` has the *_cuvid
decoders) that loads the driver's libcuda/libnvcuvid at run time, so the CPU image's one wheel
decodes on the GPU too: no system FFmpeg (torchcodec's CUDA build needs one) and no second demuxer
(PyNvVideoCodec brings its own). With `is_hw_owned` the decoded surfaces stay on the device and
their planes are exported by DLPack. Above all, the demuxing, frame counting, seeking and error
reasons are decode_pyav's own code (`decode_pyav.iter_segments` with `hwaccel`), so the frame
indices are exactly the CPU path's: round(linspace(0, n-1, T)) per window.

Only the last step differs: NV12 (or P010/P016) planes -> RGB at the clip size, in torch on the
planes' device (`yuv_to_rgb`): luma and chroma are area-averaged to the clip size first, then
converted with the frame's matrix (BT.601 unless it says BT.709/BT.2020) and range, as swscale
does on the CPU path; clips agree with the CPU's within the tolerance tests/gpu states.

A stream NVDEC cannot take (a codec without a CUDA decoder, an H.264 4:4:4 profile, a size beyond
the chip's limits) raises frame_plan.DecoderRefused or another VideoDecodeError; the GPU actor
then decodes that video on its CPU (segments.FallbackWindows) and the row says so (`decoded_on`).

`NvdecDecoder` takes its device as a parameter: tests on machines without a GPU run the same
conversion and actor code with a stand-in that decodes in software (tests/nvdec_double.py).
"""

from __future__ import annotations

import functools
import io

import numpy as np
import torch

from . import decode_pyav
from .frame_plan import DecoderRefused, Segment, VideoDecodeError, VideoInfo

# (Kr, Kb) of the YUV -> RGB matrices, by FFmpeg's AVColorSpace number; anything else is BT.601,
# swscale's default for an unspecified matrix.
_MATRICES = {1: (0.2126, 0.0722), 9: (0.2627, 0.0593), 10: (0.2627, 0.0593)}
_BT601 = (0.299, 0.114)
_FULL_RANGE = 2  # AVCOL_RANGE_JPEG


class NvdecDecoder:
    """Decodes on the NVDEC engine of CUDA device `device`; clips are uint8 tensors there,
    [T, H, W, 3]. Has frames.backend's `iter_segments`, so frames.iter_segments takes it."""

    decoded_on = "nvdec"  # the rows' `decoded_on`

    def __init__(self, device: str | torch.device = "cuda"):
        self.device = torch.device(device)

    def iter_segments(self, source, num_frames: int, size: tuple[int, int],
                      window_seconds: float | None, timeout_s: float):
        return decode_pyav.iter_segments(source, num_frames, size, window_seconds, timeout_s,
                                         hwaccel=self.hwaccel(), output=TensorFrames(self))

    def hwaccel(self):
        from av.codec.hwaccel import HWAccel

        # No software fallback inside FFmpeg: a stream NVDEC refuses must say so (the actor then
        # decodes it on the CPU and counts it); frames stay on the device (is_hw_owned).
        return HWAccel("cuda", device=str(self.device.index or 0), allow_software_fallback=False,
                       is_hw_owned=True)

    def planes(self, frame) -> tuple[torch.Tensor, torch.Tensor, float]:
        """The luma [H, W] and interleaved chroma [H/2, W/2, 2] planes of a decoded frame, on the
        device, and the divisor that brings them to 8-bit levels."""
        if frame.format.name != "cuda":
            raise DecoderRefused(f"decoded in software ({frame.format.name}), not on NVDEC")
        sw_format = frame.sw_format.name if frame.sw_format else "?"
        if sw_format not in ("nv12", "p010le", "p016le"):
            raise DecoderRefused(f"NVDEC output {sw_format} is not NV12/P010/P016")
        luma, chroma = (torch.from_dlpack(plane) for plane in frame.planes[:2])
        return luma, chroma, 1.0 if sw_format == "nv12" else 256.0


class TensorFrames:
    """decode_pyav's `output` for the GPU: a kept frame -> uint8 RGB [H, W, 3] on the device."""

    def __init__(self, decoder: NvdecDecoder):
        self.decoder = decoder

    def frame(self, frame, size: tuple[int, int]) -> torch.Tensor:
        try:
            luma, chroma, scale = self.decoder.planes(frame)
        except NotImplementedError as exc:  # PyAV's DLPack export refuses this surface layout
            raise DecoderRefused(f"NVDEC surface not exportable: {exc}") from None
        rgb = yuv_to_rgb(luma, chroma, size, frame.colorspace, frame.color_range, scale)
        if rgb.is_cuda:
            # The planes' surface goes back to FFmpeg's pool once they are freed (on return):
            # the kernels reading it must have run by then. A kept frame is rare among the
            # decoded ones, so the wait costs little.
            torch.cuda.current_stream(rgb.device).synchronize()
        return rgb

    @staticmethod
    def stack(frames: list[torch.Tensor]) -> torch.Tensor:
        return torch.stack(frames)


def yuv_to_rgb(luma: torch.Tensor, chroma: torch.Tensor, size: tuple[int, int], colorspace: int,
               color_range: int, scale: float = 1.0) -> torch.Tensor:
    """NV12-style planes (luma [H, W], chroma [H/2, W/2, 2] as Cb, Cr) -> uint8 RGB [h, w, 3] at
    `size` = (h, w), on the planes' device. As swscale's packed-RGB output does: each plane is
    area-averaged to the output size first, chroma to half the width (two neighbouring pixels
    share it), then the frame's matrix and range apply."""
    y = area_resize(luma.float(), size) / scale
    half_width = (size[1] + 1) // 2
    cb, cr = area_resize(chroma.permute(2, 0, 1).float().contiguous(), (size[0], half_width)
                         ).repeat_interleave(2, dim=-1)[..., :size[1]] / scale - 128.0
    kr, kb = _MATRICES.get(int(colorspace), _BT601)
    if int(color_range) != _FULL_RANGE:  # limited ("TV") range: Y in 16..235, C in 16..240
        y, cb, cr = (y - 16.0) * (255.0 / 219.0), cb * (255.0 / 224.0), cr * (255.0 / 224.0)
    kg = 1.0 - kr - kb
    red = y + 2.0 * (1.0 - kr) * cr
    blue = y + 2.0 * (1.0 - kb) * cb
    green = y - (2.0 * kb * (1.0 - kb) / kg) * cb - (2.0 * kr * (1.0 - kr) / kg) * cr
    return torch.stack([red, green, blue], dim=-1).round_().clamp_(0, 255).to(torch.uint8)


def area_resize(planes: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """[..., H, W] -> [..., h, w], each output pixel the exact mean of the source area it covers
    (border pixels by their covered fraction): swscale's `area` filter, as two small matrix
    products (torch's `area` interpolation rounds the areas to whole pixels instead)."""
    rows = _box_weights(planes.shape[-2], size[0], planes.device)
    columns = _box_weights(planes.shape[-1], size[1], planes.device)
    return rows @ planes @ columns.T


@functools.lru_cache(maxsize=64)  # a few frame sizes per actor
def _box_weights(source: int, target: int, device: torch.device) -> torch.Tensor:
    """[target, source]: row i averages source [i * s, (i + 1) * s), s = source / target; when
    enlarging, linear interpolation between pixel centres (what swscale's `area` does then)."""
    if target > source:
        centres = ((torch.arange(target, dtype=torch.float64) + 0.5) * (source / target) - 0.5
                   ).clamp_(0, source - 1)
        pixels = torch.arange(source, dtype=torch.float64)
        weights = (1 - (centres[:, None] - pixels).abs()).clamp_(min=0)
        return weights.to(device=device, dtype=torch.float32)
    edges = torch.arange(target + 1, dtype=torch.float64) * (source / target)
    pixels = torch.arange(source, dtype=torch.float64)
    covered = (torch.minimum(edges[1:, None], pixels + 1)
               - torch.maximum(edges[:-1, None], pixels)).clamp_(min=0)
    return (covered / (source / target)).to(device=device, dtype=torch.float32)


def nvdec_problem(device: str | torch.device = "cuda") -> str | None:
    """Why NVDEC cannot decode on `device` here (None: it can): no CUDA device, PyAV's FFmpeg
    without CUDA, or a tiny H.264 clip (encoded here by PyAV's libx264) that fails to decode
    on the GPU (driver without the `video` capability, no libnvcuvid)."""
    import av

    if not torch.cuda.is_available():
        return "no CUDA device (torch.cuda.is_available() is False)"
    if "cuda" not in av.codec.hwaccel.hwdevices_available():
        return f"PyAV {av.__version__}'s FFmpeg has no CUDA device support"
    try:
        _, segments = _decode_all(NvdecDecoder(device), io.BytesIO(_probe_clip()))
    except VideoDecodeError as exc:
        return f"NVDEC cannot decode a test H.264 clip ({exc}); is the driver's video capability " \
               f"(NVIDIA_DRIVER_CAPABILITIES=...,video) given to this container?"
    except Exception as exc:  # a driver or library that fails in any other way: not usable
        return f"NVDEC failed on a test H.264 clip: {type(exc).__name__}: {exc}"
    if segments[0].clip.device.type != "cuda":
        return "NVDEC returned frames off the GPU"
    return None


def _decode_all(decoder, source) -> tuple[VideoInfo, list[Segment]]:
    segments, walk = [], decoder.iter_segments(source, 4, (32, 32), None, 60.0)
    while True:
        try:
            segments.append(next(walk))
        except StopIteration as finished:
            return finished.value, segments


def _probe_clip(frames: int = 8, size: int = 128) -> bytes:
    """H.264 (yuv420p, constrained baseline: every NVDEC takes it) MP4 bytes of a moving ramp."""
    import av

    buffer = io.BytesIO()
    with av.open(buffer, "w", format="mp4") as container:
        stream = container.add_stream("libx264", rate=25, options={"profile": "baseline"})
        stream.width = stream.height = size
        stream.pix_fmt = "yuv420p"
        ramp = np.add.outer(np.arange(size), np.arange(size)).astype(np.uint8)
        for index in range(frames):
            image = np.repeat((ramp + 8 * index)[..., None], 3, axis=2).astype(np.uint8)
            container.mux(stream.encode(av.VideoFrame.from_ndarray(image, format="rgb24")))
        container.mux(stream.encode())
    return buffer.getvalue()
