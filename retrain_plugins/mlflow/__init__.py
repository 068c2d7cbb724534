"""MLflow for a retraining (the optional extra ``retrain-plugins[mlflow]``).

:class:`MLflowRegistryResource` under the ``Definitions`` key ``<name>_mlflow`` makes the
retraining log and register every promoted sub-model, log the routed bundle as a pyfunc model, and
keep the ``champion`` aliases on what serves (README "MLflow"). Importing this package does not
import ``mlflow``; only a retraining with the resource attached does, when it logs.
"""

from retrain_plugins.mlflow.hooks import register_promoted
from retrain_plugins.mlflow.resource import MLflowRegistryResource, attached, from_cli, mlflow_resource_key, registry_of

__all__ = ["MLflowRegistryResource", "attached", "from_cli", "mlflow_resource_key", "register_promoted", "registry_of"]
