"""Models-from-code entry point of the registered detector: MLflow stores this file with the logged model and
runs it at load time. It only imports the pyfunc class from the installed package, so no pickled code exists.
"""

from mlflow.models import set_model

from pipeline.registry.pyfunc_model import EfficientDetPyfunc

set_model(EfficientDetPyfunc())
