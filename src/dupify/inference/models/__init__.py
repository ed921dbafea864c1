"""Bundled models, each a small class over an ONNX Runtime session."""
