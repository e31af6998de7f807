"""Training pipeline (`retail_forecast.training`): features, search, backtest, ONNX export, report."""
