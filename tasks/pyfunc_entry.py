"""MLflow "models from code" entry point of the prnf surrogate (no pickled Python objects).

``mlflow.pyfunc.log_model(python_model=<this file>)`` stores this file with the model; loading
the model runs it, so prnf must be installed where the model is loaded.
"""

from mlflow.models import set_model

from tasks.pyfunc import SurrogatePyfunc

set_model(SurrogatePyfunc())
