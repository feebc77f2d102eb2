"""Deployment: bundles (safetensors + JSON), ONNX export, the HTTP service and its page."""
