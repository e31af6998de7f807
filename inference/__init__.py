"""Scoring service (`retail_forecast.inference`): ONNX model behind the Open Inference Protocol v2."""
