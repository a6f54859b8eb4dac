"""A stand-in for NVDEC on machines without a GPU (a test double, not NVDEC): it decodes in
software, hands each kept frame to the GPU path's conversion in NVDEC's own output layout (NV12
planes, exported by DLPack as NVDEC's surfaces are, here on the CPU), and refuses what NVDEC's
H.264 decoder refuses: streams that are not 4:2:0 (an FFV1 or 4:4:4 stream). So the actor, the
fallback and the conversion run here as they do on a GPU; only the decoding engine differs."""

from __future__ import annotations

import torch

from pipeline.decode_nvdec import NvdecDecoder
from pipeline.frame_plan import DecoderRefused


class SoftwareNvdec(NvdecDecoder):
    decoded_on = "nvdec"  # what the real one writes: the rows look as they would on a GPU

    def __init__(self, device: str | torch.device = "cpu"):
        super().__init__(device)
        self.refused = 0  # videos refused, for the tests

    def hwaccel(self):
        return None  # software decoding: the only difference from NvdecDecoder

    def planes(self, frame):
        if frame.format.name not in ("yuv420p", "yuvj420p", "nv12"):
            self.refused += 1
            raise DecoderRefused(f"stand-in for NVDEC: {frame.format.name} is not 4:2:0")
        nv12 = frame.reformat(format="nv12")  # the layout NVDEC's surfaces have
        luma, chroma = (torch.from_dlpack(plane).to(self.device) for plane in nv12.planes[:2])
        return luma, chroma, 1.0
