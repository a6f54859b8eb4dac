"""The MLflow pyfunc wrapper of a vidpipe checkpoint, logged as code ("models from code").

MLflow copies this file into the logged model and runs it at load time, so loading the model
with `mlflow.pyfunc.load_model` unpickles nothing; the weights come from the `checkpoint`
artifact, read with `torch.load(weights_only=True)`. Not imported by the library itself.
"""

from typing import Any

import mlflow
import numpy as np
from mlflow.pyfunc import PythonModel


class VidpipeClassifier(PythonModel):
    """uint8 clips [B, T, H, W, 3] -> class probabilities [B, C]."""

    def load_context(self, context):
        from pipeline.models.checkpoint import load_checkpoint

        self.model, self.config = load_checkpoint(context.artifacts["checkpoint"])

    # Typed as np.ndarray, a hint MLflow accepts without inferring a schema from it: the logged
    # signature (a uint8 tensor, tracking.log_model) validates inputs. Without hints MLflow 3 warns
    # on every definition of this class (at logging and at every load).
    def predict(self, context, model_input: np.ndarray,
                params: dict[str, Any] | None = None) -> np.ndarray:
        from pipeline.models import predict_probs

        return predict_probs(self.model, np.asarray(model_input, dtype=np.uint8))


mlflow.models.set_model(VidpipeClassifier())
