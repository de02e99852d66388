"""Delivery: ONNX export and the Docker code-submission folder."""
