"""ONNX export: trace one forward pass, write an ONNX model (the onnx package builds the proto).

    mininet.onnx.export(model, example_input, "model.onnx", opset=17)

The onnx package is an optional extra (pip install 'mininet-dl[onnx]'); importing this
module does not need it, export() does. Opsets 15 and up (LayerNormalization from 17;
composed below it).

What exports: every op of mininet.ops' forward passes (ops.py's table), with batch norm in
eval mode, layer norm, LSTM, RNN and GRU modules as single ONNX ops (modules.py); the
batch dimension symbolic ("batch"). What does not: gradient-only ops (the adjoints of
pooling, conv, embedding, cross-entropy), dilate and advanced indexing other than
index_select/gather forms, and tensors computed from the data outside ops (a comparison
such as x > 0 feeding where): those would be frozen as constants, which the export refuses
when its second trace (another batch, the samples reversed) shows them changing.
"""
from .export import export, save, to_model
from .trace import OnnxExportError

__all__ = ["OnnxExportError", "export", "save", "to_model"]
