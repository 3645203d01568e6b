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
        if isinstance(model_input, pd.DataFrame):
            texts = model_input.iloc[:, 0].astype(str).tolist()
        else:
            texts = [str(t) for t in model_input]
        return self.model.predict(texts)


mlflow.models.set_model(OnnxTextClassifierModel())
