/* Innermost elementwise loops, one per op and dtype, specialised on the two
 * common stride patterns (contiguous, and one side broadcast) so gcc
 * vectorises them. The ops come from _ops.h, generated from
 * mininet/backend/opcodes.py; an unknown op number traps. */
#include "_vecmath.h"
#include "_ops.h"
#include <stddef.h>
typedef ptrdiff_t mn_idx;

#define MN_BIN_BODY(T, EXPR)                                                   \
    mn_idx i;                                                                  \
    if (sa == 1 && sb == 1) {                                                  \
        for (i = 0; i < n; i++) { T x = a[i], y = b[i]; o[i] = (EXPR); }       \
    } else if (sa == 1 && sb == 0) {                                           \
        T y = b[0];                                                            \
        for (i = 0; i < n; i++) { T x = a[i]; o[i] = (EXPR); }                 \
    } else if (sa == 0 && sb == 1) {                                           \
        T x = a[0];                                                            \
        for (i = 0; i < n; i++) { T y = b[i]; o[i] = (EXPR); }                 \
    } else {                                                                   \
        for (i = 0; i < n; i++) { T x = a[i * sa], y = b[i * sb]; o[i] = (EXPR); } \
    }

#define MN_UN_BODY(T, EXPR)                                                    \
    mn_idx i;                                                                  \
    if (sa == 1) { for (i = 0; i < n; i++) { T x = a[i]; o[i] = (EXPR); } }    \
    else { for (i = 0; i < n; i++) { T x = a[i * sa]; o[i] = (EXPR); } }

#define MN_F32(fn) fn##f
#define MN_F64(fn) fn

#define MN_DEF_BIN(T, K, NAME, EXPR)                                           \
    static void mn_bin_##NAME##_##T(const T* a, mn_idx sa, const T* b, mn_idx sb, T* o, mn_idx n) \
    { MN_BIN_BODY(T, EXPR) }
#define MN_DEF_UN(T, K, NAME, EXPR)                                            \
    static void mn_un_##NAME##_##T(const T* a, mn_idx sa, T* o, mn_idx n) { MN_UN_BODY(T, EXPR) }
#define MN_CASE_BIN(T, K, NAME, EXPR) case K: mn_bin_##NAME##_##T(a, sa, b, sb, o, n); break;
#define MN_CASE_UN(T, K, NAME, EXPR) case K: mn_un_##NAME##_##T(a, sa, o, n); break;

MN_BINARY_OPS(MN_DEF_BIN, float, MN_F32)
MN_BINARY_OPS(MN_DEF_BIN, double, MN_F64)
MN_UNARY_OPS(MN_DEF_UN, float, MN_F32)
MN_UNARY_OPS(MN_DEF_UN, double, MN_F64)

static void mn_binary_f32(int op, const float* a, mn_idx sa, const float* b, mn_idx sb, float* o, mn_idx n)
{ switch (op) { MN_BINARY_OPS(MN_CASE_BIN, float, MN_F32) default: __builtin_trap(); } }
static void mn_binary_f64(int op, const double* a, mn_idx sa, const double* b, mn_idx sb, double* o, mn_idx n)
{ switch (op) { MN_BINARY_OPS(MN_CASE_BIN, double, MN_F64) default: __builtin_trap(); } }
static void mn_unary_f32(int op, const float* a, mn_idx sa, float* o, mn_idx n)
{ switch (op) { MN_UNARY_OPS(MN_CASE_UN, float, MN_F32) default: __builtin_trap(); } }
static void mn_unary_f64(int op, const double* a, mn_idx sa, double* o, mn_idx n)
{ switch (op) { MN_UNARY_OPS(MN_CASE_UN, double, MN_F64) default: __builtin_trap(); } }
