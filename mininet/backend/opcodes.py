"""Op numbers shared by every backend's kernels (mininet_ext/_ewise.h, cuda_src)."""
BINARY = {name: i for i, name in enumerate(
    ["add", "sub", "mul", "div", "pow", "maximum", "minimum",
     "eq", "ne", "lt", "le", "gt", "ge"])}
UNARY = {name: i for i, name in enumerate(
    ["neg", "abs", "exp", "log", "sqrt", "tanh", "sigmoid", "relu", "sign", "square"])}
REDUCE = {name: i for i, name in enumerate(["sum", "max", "min", "argmax", "argmin"])}
