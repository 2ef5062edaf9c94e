"""Inference: the Predictor (the one inference path); quantisation and ONNX export come with issue 5."""
