"""MLflow "model from code": the ONNX classifier (text, image or audio) or recommender as a pyfunc,
servable without fmpipe or torch.

MLflow copies this file into the model and puts `serving.py` (logged as code) on sys.path.
"""

import mlflow
import pandas as pd
from mlflow.pyfunc import PythonModel


class OnnxClassifierModel(PythonModel):
    def load_context(self, context):
        import json
        from pathlib import Path

        from serving import SERVING_FILE, OnnxFileClassifier, open_classifier, open_recommender

        folder = context.artifacts["model_dir"]
        task = json.loads((Path(folder) / SERVING_FILE).read_text()).get("task")
        self.recommender = open_recommender(folder) if task == "recsys" else None
        self.model = self.recommender or open_classifier(folder)
        self.files = isinstance(self.model, OnnxFileClassifier)  # images, audio: bytes or paths

    def predict(self, context, model_input, params=None):
        """Texts, or images or audio clips (encoded bytes or file paths), as a list or a one-column frame, in;
        each input's label and its probability out. A recommender takes user ids and gives each
        user's top k (params {"top": k}, default 10): one row per recommendation."""
        import numpy as np

        frame = isinstance(model_input, pd.DataFrame)
        items = model_input.iloc[:, 0].tolist() if frame else list(model_input)
        if self.recommender is not None:
            users = [str(u) for u in items]
            found = self.recommender.recommend(users, top=int((params or {}).get("top", 10)))
            rows = [{"user": user, "rank": rank, **row} for user, found_rows in zip(users, found, strict=True)
                    for rank, row in enumerate(found_rows, start=1)]
            return pd.DataFrame(rows,
                                columns=["user", "rank", "item", "title", "score", "rating"])
        inputs = items if self.files else [str(t) for t in items]
        logits = self.model.logits(inputs)
        probs = np.exp(logits - logits.max(axis=1, keepdims=True))
        probs /= probs.sum(axis=1, keepdims=True)
        best = probs.argmax(axis=1)
        return pd.DataFrame({"label": [self.model.labels[i] for i in best],
                             "probability": probs[np.arange(len(inputs)), best].astype(float)})


mlflow.models.set_model(OnnxClassifierModel())
