"""ONNX export: trace one forward pass, write an ONNX model (the onnx package builds the proto)."""
