"""MLflow "model from code": the ONNX classifier (text or image) as a pyfunc, servable without
fmpipe or torch.

MLflow copies this file into the model and puts `serving.py` (logged as code) on sys.path.
"""

import mlflow
import pandas as pd
from mlflow.pyfunc import PythonModel


class OnnxClassifierModel(PythonModel):
    def load_context(self, context):
        from serving import OnnxImageClassifier, open_classifier

        self.model = open_classifier(context.artifacts["model_dir"])
        self.images = isinstance(self.model, OnnxImageClassifier)

    def predict(self, context, model_input, params=None):
        """Texts, or images (encoded bytes or file paths), as a list or a one-column frame, in;
        each input's label and its probability out."""
        import numpy as np

        frame = isinstance(model_input, pd.DataFrame)
        items = model_input.iloc[:, 0].tolist() if frame else list(model_input)
        inputs = items if self.images else [str(t) for t in items]
        logits = self.model.logits(inputs)
        probs = np.exp(logits - logits.max(axis=1, keepdims=True))
        probs /= probs.sum(axis=1, keepdims=True)
        best = probs.argmax(axis=1)
        return pd.DataFrame({"label": [self.model.labels[i] for i in best],
                             "probability": probs[np.arange(len(inputs)), best].astype(float)})


mlflow.models.set_model(OnnxClassifierModel())
