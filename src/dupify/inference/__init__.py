"""Inference: the session policy, pinned model files, the models, their registry, and the
backend that runs them (in process: ONNX Runtime behind micro-batchers)."""
