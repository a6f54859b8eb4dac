"""The device checks of tests/gpu, run on the CPU: the same code paths as on CUDA (gloo instead of
NCCL), so the GPU suite is known to import and run before a GPU sees it."""

from __future__ import annotations

import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent / "gpu"))

import checks  # noqa: E402

CPU = torch.device("cpu")


def test_inference_from_uint8_batches_on_the_cpu():
    checks.inference_from_uint8(CPU)


def test_training_step_validation_checkpoint_and_resume_on_the_cpu():
    checks.train_validate_checkpoint_resume(CPU)


def test_amp_training_on_the_cpu_is_float32_and_still_learns():
    checks.amp_training_step_reduces_loss(CPU)


def test_all_reduce_across_two_gloo_ranks():
    checks.all_reduce_across_two_ranks("gloo")


def test_mixed_precision_on_and_off_agree_on_the_cpu():
    checks.mixed_precision_agrees(CPU)


def test_gpu_suite_imports_only_torch_numpy_and_the_package():
    """The stock CUDA image has no Ray, MLflow, pyarrow, s3fs or ffmpeg-python."""
    import subprocess

    code = ("import sys\n"
            "class Block:\n"
            "    def find_spec(self, name, *a):\n"
            "        if name.split('.')[0] in {'ray','mlflow','pyarrow','s3fs','fsspec','ffmpeg',"
            "'imageio_ffmpeg','pandas','matplotlib'}:\n"
            "            raise ImportError('blocked: ' + name)\n"
            "sys.meta_path.insert(0, Block())\n"
            f"sys.path.insert(0, {str(Path(__file__).parent / 'gpu')!r})\n"
            "import checks, test_all_reduce, test_cuda\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          cwd=Path(__file__).resolve().parents[1])
    assert done.returncode == 0, done.stderr[-2000:]
