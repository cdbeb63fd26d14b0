"""The one table of elementwise and reduction ops, keyed by name.

An op's number is its position here; the C kernels (mininet_ext/_ops.h, written by
setup.py) and the CUDA kernels (ops_gen.cuh, written when they are compiled) are
generated from this file, so adding an op means adding one line here (plus its Op
class and test). Each expression is written once for C and CUDA, in x (and y) of
element type T; M(f) names the math function for T (expf/exp in C, the overloads in
CUDA). An unknown op number traps in every kernel instead of computing another op.

This module imports nothing from mininet: setup.py runs it before anything is built.
"""
# (name, expression)
BINARY_OPS = (
    ("add", "x + y"),
    ("sub", "x - y"),
    ("mul", "x * y"),
    ("div", "x / y"),
    ("pow", "M(pow)(x, y)"),
    ("maximum", "MN_MAX(x, y)"),   # NaN-propagating, as numpy.maximum
    ("minimum", "MN_MIN(x, y)"),
    ("eq", "(T)(x == y)"),
    ("ne", "(T)(x != y)"),
    ("lt", "(T)(x < y)"),
    ("le", "(T)(x <= y)"),
    ("gt", "(T)(x > y)"),
    ("ge", "(T)(x >= y)"),
    ("pass_pos", "y > 0 ? x : (T)0"),   # x where y > 0, else 0: ReLU's backward in one pass
    ("leaky", "x > 0 ? x : x * y"),               # leaky ReLU of x, slope y (NaN stays NaN)
    ("leaky_slope", "x > 0 ? (T)1 : y"),          # its derivative at x
    ("elu", "x > 0 ? x : y * M(expm1)(x)"),       # ELU of x, alpha y
    ("elu_slope", "x > 0 ? (T)1 : y * M(exp)(x)"),  # its derivative at x
    # softplus log(1 + exp(x)), x itself above the threshold y; then its derivative
    ("softplus", "x > y ? x : MN_MAX(x, (T)0) + M(log1p)(M(exp)(-M(fabs)(x)))"),
    ("softplus_slope", "x > y ? (T)1 : (T)1 / ((T)1 + M(exp)(-x))"),
    ("tanh_grad", "x * ((T)1 - y * y)"),          # x * tanh'(z) from y = tanh(z)
    ("sigmoid_grad", "x * y * ((T)1 - y)"),       # x * sigmoid'(z) from y = sigmoid(z)
    # x * SiLU'(y) = x s (1 + y (1 - s)), s = sigmoid(y)
    ("silu_grad", "x * ((T)1 / ((T)1 + M(exp)(-y))) * ((T)1 + y * ((T)1 - (T)1 / ((T)1 + M(exp)(-y))))"),
    # x * G'(y) for G(y) = y (1 + tanh(u)) / 2, u = c (y + a y^3) (GELU's tanh form):
    # G' = (1 + t) / 2 + y (1 - t^2) c (1 + 3 a y^2) / 2, t = tanh(u)
    ("gelu_tanh_grad", "x * ((T)0.5 * ((T)1 + M(tanh)((T)0.79788456080286535588 * (y + (T)0.044715 * y * y * y)))"
                       " + (T)0.5 * y * ((T)1 - M(tanh)((T)0.79788456080286535588 * (y + (T)0.044715 * y * y * y))"
                       " * M(tanh)((T)0.79788456080286535588 * (y + (T)0.044715 * y * y * y)))"
                       " * (T)0.79788456080286535588 * ((T)1 + (T)0.134145 * y * y))"),
    # x * GELU'(y) = x (Phi(y) + y phi(y)): exact GELU's backward in one pass
    ("gelu_grad", "x * ((T)0.5 * ((T)1 + M(erf)(y * (T)0.70710678118654752440))"
                  " + y * (T)0.39894228040143267794 * M(exp)((T)-0.5 * y * y))"),
)

# (name, expression, cost): cost is the work of one element relative to an add; the
# CPU kernels go parallel sooner for costly (transcendental) ops
UNARY_OPS = (
    ("neg", "-x", 1),
    ("abs", "M(fabs)(x)", 1),
    ("exp", "M(exp)(x)", 8),
    ("log", "M(log)(x)", 8),
    ("sqrt", "M(sqrt)(x)", 8),
    ("tanh", "M(tanh)(x)", 8),
    ("sigmoid", "(T)1 / ((T)1 + M(exp)(-x))", 8),
    ("relu", "x < 0 ? (T)0 : x", 1),                          # NaN stays NaN
    ("sign", "x != x ? x : (T)((x > 0) - (x < 0))", 1),
    ("square", "x * x", 1),
    ("log1p", "M(log1p)(x)", 8),
    ("expm1", "M(expm1)(x)", 8),
    ("erf", "M(erf)(x)", 8),
    ("silu", "x / ((T)1 + M(exp)(-x))", 8),
    # x Phi(x), Phi the standard normal CDF: exact GELU in one pass
    ("gelu", "x * (T)0.5 * ((T)1 + M(erf)(x * (T)0.70710678118654752440))", 8),
    # GELU's tanh form, x (1 + tanh(c (x + a x^3))) / 2, c = sqrt(2 / pi), a = 0.044715
    ("gelu_tanh", "x * (T)0.5 * ((T)1 + M(tanh)((T)0.79788456080286535588 * (x + (T)0.044715 * x * x * x)))", 8),
)

REDUCE_OPS = ("sum", "max", "min", "argmax", "argmin")

# The binary ops whose result is a mask: the CPU kernels that write bool outputs are
# built for these alone (~40% of elementwise.c's compile time went to bool kernels of
# the other ops, which nothing called)
COMPARE_OPS = ("eq", "ne", "lt", "le", "gt", "ge")

BINARY = {name: i for i, (name, _) in enumerate(BINARY_OPS)}
UNARY = {name: i for i, (name, _, _) in enumerate(UNARY_OPS)}
REDUCE = {name: i for i, name in enumerate(REDUCE_OPS)}
COMPARE = frozenset(BINARY[name] for name in COMPARE_OPS)   # their op numbers


def signature():
    """The op names in order: compiled kernels carry it, and the backend refuses kernels
    built from another table."""
    return ",".join(BINARY) + "|" + ",".join(UNARY) + "|" + ",".join(REDUCE)


_COMMON = """\
/* NaN-propagating max/min, as numpy.maximum/minimum. */
#define MN_MAX(x, y) (((x) >= (y) || (x) != (x)) ? (x) : (y))
#define MN_MIN(x, y) (((x) <= (y) || (x) != (x)) ? (x) : (y))
"""


def _reduce_defines():
    """MN_REDUCE_SUM 0 ...: the reduction numbers both kernel sets compare against."""
    return "".join(f"#define MN_REDUCE_{n.upper()} {i}\n" for i, n in enumerate(REDUCE_OPS))


def c_header():
    """mininet_ext/_ops.h: X-macros over the ops, instantiated per dtype by _ewise.h."""
    binary = " \\\n    ".join(f"X(T, {i}, {n}, {e})" for i, (n, e) in enumerate(BINARY_OPS))
    unary = " \\\n    ".join(f"X(T, {i}, {n}, {e})" for i, (n, e, _) in enumerate(UNARY_OPS))
    compare = " \\\n    ".join(f"X(T, {i}, {n}, {e})" for i, (n, e) in enumerate(BINARY_OPS)
                                if n in COMPARE_OPS)
    is_compare = ", ".join("1" if n in COMPARE_OPS else "0" for n, _ in BINARY_OPS)
    costs = ", ".join(str(c) for _, _, c in UNARY_OPS)
    return (f"/* Generated from mininet/backend/opcodes.py by setup.py: do not edit. */\n"
            f"#ifndef MN_OPS_H\n#define MN_OPS_H\n{_COMMON}"
            f"#define MN_NUM_BINARY {len(BINARY_OPS)}\n#define MN_NUM_UNARY {len(UNARY_OPS)}\n"
            f'#define MN_OPS_SIGNATURE "{signature()}"\n'
            f"{_reduce_defines()}"
            f"static const int mn_unary_cost[MN_NUM_UNARY] = {{{costs}}};\n"
            f"static const unsigned char mn_is_compare[MN_NUM_BINARY] = {{{is_compare}}};\n"
            f"#define MN_BINARY_OPS(X, T, M) \\\n    {binary}\n"
            f"#define MN_COMPARE_OPS(X, T, M) \\\n    {compare}\n"
            f"#define MN_UNARY_OPS(X, T, M) \\\n    {unary}\n#endif\n")


def cuda_header():
    """ops_gen.cuh: binary_op / unary_op device functions; an unknown op traps."""
    def cases(ops):
        return "\n".join(f"        case {i}: return {op[1]};" for i, op in enumerate(ops))
    return (f"// Generated from mininet/backend/opcodes.py when the kernels compile: do not edit.\n"
            f"#pragma once\n{_COMMON}{_reduce_defines()}#define M(fn) fn\n"
            f"template <typename T>\n__device__ __forceinline__ T binary_op(int op, T x, T y) {{\n"
            f"    switch (op) {{\n{cases(BINARY_OPS)}\n"
            f"        default: __trap(); return x;\n    }}\n}}\n\n"
            f"template <typename T>\n__device__ __forceinline__ T unary_op(int op, T x) {{\n"
            f"    switch (op) {{\n{cases(UNARY_OPS)}\n"
            f"        default: __trap(); return x;\n    }}\n}}\n#undef M\n")
