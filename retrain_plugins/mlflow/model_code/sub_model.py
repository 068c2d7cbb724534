"""MLflow "models from code" entry of one sub-model: MLflow copies this file into the logged model
and runs it when loading (no pickle). Not a module to import."""

import mlflow.models

from retrain_plugins.mlflow.pyfunc import SubModelPythonModel

mlflow.models.set_model(SubModelPythonModel())
