"""Inference: ONNX Runtime sessions, models, and the micro-batcher."""
