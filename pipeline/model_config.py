"""What a checkpoint says about itself (architecture, class names, frames, size, sampling), read
without torch.

A command's driver only needs a checkpoint's config: the frames and size to sample, the window,
the class names; the weights are loaded where the model runs (models/checkpoint.py, in the
workers). Reading the config here, without importing torch, keeps torch's import (about a second)
out of every `classify` and `scan` driver.

A checkpoint is a `torch.save` zip whose `data.pkl` pickles the payload dict, tensors as calls to
torch's rebuild functions on storages the zip holds. `read_config` unpickles it with every torch
global replaced by a stand-in that builds nothing, and no other global allowed: like torch's
`weights_only=True` loading, reading a file runs no code from it.
"""

from __future__ import annotations

import io
import pickle
import zipfile
from dataclasses import asdict, dataclass, fields

from .architectures import canonical_arch
from .errors import CheckpointError

FORMAT = "vidpipe-checkpoint/1"
SAMPLING = "uniform"  # round(linspace(0, n-1, frames)) over the decoded frames of a window


@dataclass(frozen=True)
class ModelConfig:
    arch: str
    class_names: tuple[str, ...]
    frames: int = 20
    size: int = 64
    sampling: str = SAMPLING
    # The time span one clip covered in training (the training clips' median duration, or the
    # training window). Inference cuts longer videos into windows of this length by default.
    clip_seconds: float | None = None
    dataset_fingerprint: str = ""  # which videos trained it (clips.dataset_fingerprint)
    # Short hashes of each training video (clips.video_digests): `evaluate` warns on overlap.
    training_videos: tuple[str, ...] = ()

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    def window_seconds(self, requested: float | None = None) -> float | None:
        """The inference window: `requested` if given (0 = the whole video, returned as None),
        else the clip duration the model was trained on (None: whole videos)."""
        if requested is None:
            return self.clip_seconds
        return requested if requested > 0 else None

    def to_dict(self) -> dict:
        data = asdict(self)
        data["class_names"] = list(self.class_names)
        return data

    @classmethod
    def from_dict(cls, data: dict) -> ModelConfig:
        known = {f.name for f in fields(cls)}
        # `extra` was written (always empty) by checkpoints before clip_seconds existed.
        unknown = set(data) - known - {"extra"}
        if unknown:
            raise CheckpointError(f"checkpoint config has unknown field(s): {', '.join(sorted(unknown))}")
        data = {key: value for key, value in data.items() if key in known}
        data["class_names"] = tuple(data["class_names"])
        data["training_videos"] = tuple(data.get("training_videos", ()))
        data["arch"] = canonical_arch(data["arch"])
        if data.get("sampling", SAMPLING) != SAMPLING:
            raise CheckpointError(f"checkpoint was trained with sampling '{data['sampling']}'; "
                                  f"this vidpipe samples '{SAMPLING}' only")
        return cls(**data)

    def build(self):
        """The untrained torch model this config describes (imports torch)."""
        from .models import build_model

        return build_model(self.arch, self.num_classes, self.frames, self.size)


def read_config(data: bytes) -> ModelConfig:
    """The config of the checkpoint `data` (its bytes), without torch and without its weights;
    CheckpointError with a one-line reason when `data` is not a vidpipe checkpoint."""
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as archive:
            pickled = [name for name in archive.namelist() if name.endswith("/data.pkl")]
            if len(pickled) != 1:
                raise CheckpointError("not a readable checkpoint: no torch.save payload in it")
            payload = _PayloadReader(io.BytesIO(archive.read(pickled[0]))).load()
    except CheckpointError:
        raise
    except Exception as exc:  # not a zip, a truncated file, a pickle of something else
        raise CheckpointError(f"not a readable checkpoint: {type(exc).__name__}") from None
    return payload_config(payload)


def payload_config(payload: object) -> ModelConfig:
    """The config of an unpickled checkpoint payload (here without tensors, or torch.load's);
    CheckpointError when it is not a vidpipe checkpoint's."""
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise CheckpointError("not a vidpipe checkpoint (missing format marker)")
    if not isinstance(payload.get("config"), dict) or not isinstance(payload.get("state_dict"), dict):
        raise CheckpointError("not a vidpipe checkpoint (no config or no weights)")
    return ModelConfig.from_dict(payload["config"])


class _Opaque:
    """What a tensor (or anything else torch rebuilds) reads as: nothing, whatever its state."""

    def __setstate__(self, state) -> None:
        pass


class _TorchStandIn:
    """Any torch global a checkpoint's pickle names (rebuild functions, storage types): calling it
    builds nothing, so no tensor (and no torch) is needed to read the rest."""

    def __call__(self, *args, **kwargs) -> _Opaque:
        return _Opaque()


class _Dict(dict):
    """collections.OrderedDict as pickled by a module's state_dict(), which carries attributes."""


class _PayloadReader(pickle.Unpickler):
    """Plain values, dicts and torch's tensor references (as stand-ins); any other global is an
    error, so unpickling a checkpoint never imports or runs anything."""

    def find_class(self, module: str, name: str):
        if module == "torch" or module.startswith("torch."):
            return _TorchStandIn()
        if (module, name) == ("collections", "OrderedDict"):
            return _Dict
        raise pickle.UnpicklingError(f"unexpected global {module}.{name}")

    def persistent_load(self, pid) -> None:  # a tensor's storage, held elsewhere in the zip
        return None
