"""retail-forecast: demand forecasting from sales data to a served, verified ONNX model on Kubernetes."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("retail-forecast")
except PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0.0.0"
