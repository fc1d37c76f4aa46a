"""The MLflow ``pyfunc`` face of a saved lmo-dp classifier (:mod:`trainers.saved_model`).

``mlflow.pyfunc.load_model(uri).predict(texts)`` takes a list of strings, a pandas Series, or a
DataFrame with a ``text`` column (else its first column) and returns a DataFrame with one row per
text: ``label`` (the most probable class's name), ``probability`` (its probability, in [0, 1]) and
``p_<label>`` for every class. Loading needs lmo-dp installed and the base model on disk.
"""

from __future__ import annotations

from typing import Any

import mlflow.pyfunc

#: the key of the saved model folder among the MLflow model's artifacts
ARTIFACT_KEY = "lmodp_model"

#: the model's code file (MLflow "models from code": nothing is pickled); needs lmo-dp installed
CODE = """import mlflow.models

from orchestrator.pyfunc_model import LmoDpClassifier

mlflow.models.set_model(LmoDpClassifier())
"""


def as_texts(model_input: Any) -> list[str]:
    """The texts of a pyfunc input (list, tuple, Series, DataFrame with ``text`` or one column)."""
    import pandas as pd

    if isinstance(model_input, pd.DataFrame):
        column = "text" if "text" in model_input.columns else model_input.columns[0]
        values = list(model_input[column])
    elif isinstance(model_input, pd.Series):
        values = list(model_input)
    elif isinstance(model_input, str):
        values = [model_input]
    else:
        values = list(model_input)
    bad = [v for v in values if not isinstance(v, str)]
    if bad:
        raise ValueError(f"texts must be strings, got {type(bad[0]).__name__}")
    return values


class LmoDpClassifier(mlflow.pyfunc.PythonModel):
    """Loads the saved folder once (:func:`trainers.saved_model.load_saved`) and predicts labels."""

    #: inputs are checked by :func:`as_texts`; MLflow's type-hint validation (and its warning
    #: that there are no hints) is not used
    _skip_type_hint_validation = True

    # no type hints: MLflow would read them as the input schema
    def load_context(self, context):
        from trainers.saved_model import load_saved

        self.classifier = load_saved(context.artifacts[ARTIFACT_KEY])

    def predict(self, context, model_input, params=None):
        import pandas as pd

        texts = as_texts(model_input)
        probs = self.classifier.predict_proba(texts)
        names = self.classifier.labels
        table = pd.DataFrame({
            "label": [names[int(row.argmax())] for row in probs],
            "probability": [float(row.max()) for row in probs],
        })  # fmt: skip
        for i, name in enumerate(names):
            table[f"p_{name}"] = probs[:, i] if len(texts) else []
        return table
