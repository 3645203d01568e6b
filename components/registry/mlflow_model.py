"""MLflow "model from code": the ONNX classifier as a pyfunc, servable without fmpipe or torch.

MLflow copies this file into the model and puts `serving.py` (logged as code) on sys.path.
"""

import mlflow
import pandas as pd
from mlflow.pyfunc import PythonModel


class OnnxTextClassifierModel(PythonModel):
    def load_context(self, context):
        from serving import OnnxTextClassifier

        self.model = OnnxTextClassifier(context.artifacts["model_dir"])

    def predict(self, context, model_input, params=None):
        """Texts (a list, or a one-column frame) in; each text's label and its probability out."""
        import numpy as np

        if isinstance(model_input, pd.DataFrame):
            texts = model_input.iloc[:, 0].astype(str).tolist()
        else:
            texts = [str(t) for t in model_input]
        logits = self.model.logits(texts)
        probs = np.exp(logits - logits.max(axis=1, keepdims=True))
        probs /= probs.sum(axis=1, keepdims=True)
        best = probs.argmax(axis=1)
        return pd.DataFrame({"label": [self.model.labels[i] for i in best],
                             "probability": probs[np.arange(len(texts)), best].astype(float)})


mlflow.models.set_model(OnnxTextClassifierModel())
