"""MLflow: the tracking URI, and models logged so that any vidpipe REF can load them.

Contract for every model vidpipe logs: a pyfunc MLflow model whose artifact `checkpoint` is a
vidpipe checkpoint file named `checkpoint.pt` (see models/checkpoint.py); loaders find that file
and never unpickle the pyfunc wrapper.
"""

from __future__ import annotations

import os
import shutil
import tempfile

import numpy as np

CHECKPOINT_FILE = "checkpoint.pt"
MODEL_NAME_IN_RUN = "model"


def tracking_uri(uri: str | None = None) -> str:
    """--mlflow-uri, else MLFLOW_TRACKING_URI, else a local sqlite store in the working dir."""
    return uri or os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{os.path.abspath('mlflow.db')}"


def _pyfunc_class():
    import mlflow

    class VidpipeClassifier(mlflow.pyfunc.PythonModel):
        """uint8 clips [B, T, H, W, 3] -> class probabilities [B, C]."""

        def load_context(self, context):
            from pipeline.models.checkpoint import load_checkpoint

            self.model, self.config = load_checkpoint(context.artifacts["checkpoint"])

        def predict(self, context, model_input, params=None):
            import torch

            from pipeline.models import clips_to_tensor

            with torch.no_grad():
                logits = self.model(clips_to_tensor(np.asarray(model_input, dtype=np.uint8)))
            return torch.softmax(logits, dim=1).numpy()

    return VidpipeClassifier


def log_model(checkpoint_path: str, registered_name: str | None = None):
    """Log a checkpoint as the active run's model (and register it); returns MLflow's ModelInfo."""
    import mlflow
    from mlflow.models import ModelSignature
    from mlflow.types import Schema, TensorSpec

    from .models.checkpoint import load_checkpoint

    _, config = load_checkpoint(checkpoint_path)
    staging = tempfile.mkdtemp(prefix="vidpipe-model-")
    staged = os.path.join(staging, CHECKPOINT_FILE)  # the name loaders look for
    shutil.copyfile(checkpoint_path, staged)
    signature = ModelSignature(
        inputs=Schema([TensorSpec(np.dtype(np.uint8), (-1, config.frames, config.size, config.size, 3))]),
        outputs=Schema([TensorSpec(np.dtype(np.float32), (-1, config.num_classes))]),
    )
    try:
        return mlflow.pyfunc.log_model(
            name=MODEL_NAME_IN_RUN,
            python_model=_pyfunc_class()(),
            artifacts={"checkpoint": staged},
            signature=signature,
            registered_model_name=registered_name,
            pip_requirements=["torch", "numpy"],
        )
    finally:
        shutil.rmtree(staging, ignore_errors=True)
