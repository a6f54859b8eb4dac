"""The GPU paths on CUDA: inference, a training step with validation, checkpoint and resume, NCCL
all_reduce across two ranks (two GPUs), mixed precision (inference, and training steps with a
loss scaler). The same checks run on the CPU in tests/test_devices.py."""

from __future__ import annotations

import pytest
import torch

import checks

pytestmark = pytest.mark.gpu
CUDA = torch.device("cuda")


def test_classifier_inference_on_cuda_from_uint8_batches():
    checks.inference_from_uint8(CUDA)


def test_training_step_validation_checkpoint_and_resume_on_cuda():
    checks.train_validate_checkpoint_resume(CUDA)


def test_amp_training_step_reduces_loss_on_cuda():
    checks.amp_training_step_reduces_loss(CUDA)


@pytest.mark.skipif(torch.cuda.device_count() < 2,
                    reason="NCCL needs a GPU per rank and this machine has fewer than two; "
                           "test_all_reduce.py reduces across two gloo ranks instead")
def test_nccl_all_reduce_across_two_ranks():
    checks.all_reduce_across_two_ranks("nccl")


def test_mixed_precision_on_and_off_agree_on_cuda():
    checks.mixed_precision_agrees(CUDA)
