"""The program-level errors: the exceptions the CLI reports as one line (exit 1) instead of a
traceback.

They live here, in a module that imports nothing, so that the CLI can catch them without importing
the modules that raise them (torch, Ray, storage): `vidpipe --help` and a usage error stay fast.
Each is re-exported by the module that raises it (named in its docstring), where callers know it.
(VideoDecodeError stays in the leaf frame_plan.py, which imports nothing of ours and no torch.)

`InvalidInput` is a ValueError for callers that catch those, but the CLI does not treat every
ValueError as the user's: a ValueError from a bug keeps its traceback.
"""

from __future__ import annotations


class InvalidInput(ValueError):
    """The data, model or settings given cannot be used; the message is one line saying why."""


class PreflightError(Exception):
    """preflight.py: a command cannot start; the one-line reason."""


class CorpusError(Exception):
    """corpus.py: a corpus that cannot be read; the message is a one-line reason."""


class CheckpointError(Exception):
    """models/checkpoint.py: a checkpoint that cannot be read or is not ours; the message is a
    one-line reason."""


class TooManyErrors(Exception):
    """inference.py: more videos failed than the error threshold allows; the rows were still
    written."""


class RegistrationFailed(Exception):
    """train_job.py: training succeeded but the model could not be registered; the checkpoint is
    kept."""


class LeaseHeld(Exception):
    """lease.py: another live run holds the lease; the message says who and since when."""


class LeaseLost(Exception):
    """lease.py: this run's lease was taken over (or could not be renewed in time); nothing was
    committed."""


class LeaseUnsupported(Exception):
    """lease.py: the store cannot fence writers (no conditional writes); the message names it."""


class DecoderUnavailable(Exception):
    """decoder_choice.py: the `--decoder` asked for cannot run on this cluster (`nvdec` without
    GPUs, or GPUs that cannot decode on NVDEC); a usage error (exit 2), said in one line."""
