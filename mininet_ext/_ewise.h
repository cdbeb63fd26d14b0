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

/* Comparisons straight into bool (1-byte) outputs: o = (op(x, y) != 0), so a mask costs
 * a quarter of a float32 result's memory and no cast. Built for the comparison ops alone
 * (MN_COMPARE_OPS); elementwise.pyx refuses any other op before it gets here. */
#define MN_DEF_CMP(T, K, NAME, EXPR)                                           \
    static void mn_cmp_##NAME##_##T(const T* a, mn_idx sa, const T* b, mn_idx sb, \
                                    unsigned char* o, mn_idx n)                \
    { MN_BIN_BODY(T, (unsigned char)((EXPR) != (T)0)) }
#define MN_CASE_CMP(T, K, NAME, EXPR) case K: mn_cmp_##NAME##_##T(a, sa, b, sb, o, n); break;

MN_COMPARE_OPS(MN_DEF_CMP, float, MN_F32)
MN_COMPARE_OPS(MN_DEF_CMP, double, MN_F64)

static void mn_compare_f32(int op, const float* a, mn_idx sa, const float* b, mn_idx sb,
                           unsigned char* o, mn_idx n)
{ switch (op) { MN_COMPARE_OPS(MN_CASE_CMP, float, MN_F32) default: __builtin_trap(); } }
static void mn_compare_f64(int op, const double* a, mn_idx sa, const double* b, mn_idx sb,
                           unsigned char* o, mn_idx n)
{ switch (op) { MN_COMPARE_OPS(MN_CASE_CMP, double, MN_F64) default: __builtin_trap(); } }

/* Logical ops on bools (0: and, 1: or, 2: xor; backend/device.py LOGICAL). Any nonzero
 * byte reads as true, so bytes shared from elsewhere cannot give 2 & 1 == 0. */
typedef unsigned char mn_u8;
static void mn_logical(int op, const mn_u8* a, mn_idx sa, const mn_u8* b, mn_idx sb,
                       mn_u8* o, mn_idx n)
{
    switch (op) {
    case 0: { MN_BIN_BODY(mn_u8, (mn_u8)((x != 0) & (y != 0))) } break;
    case 1: { MN_BIN_BODY(mn_u8, (mn_u8)((x != 0) | (y != 0))) } break;
    case 2: { MN_BIN_BODY(mn_u8, (mn_u8)((x != 0) ^ (y != 0))) } break;
    default: __builtin_trap();
    }
}
