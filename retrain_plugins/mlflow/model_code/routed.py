"""MLflow "models from code" entry of the routed bundle: MLflow copies this file into the logged
model and runs it when loading (no pickle). Not a module to import."""

import mlflow.models

from retrain_plugins.mlflow.pyfunc import RoutedPythonModel

mlflow.models.set_model(RoutedPythonModel())
