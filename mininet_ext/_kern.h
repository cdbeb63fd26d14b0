/* One ISA's kernel table as a small extension module, mininet_ext._kern_<MN_ISA>.
 * setup.py writes mininet_ext/_kern_<isa>.c (a #define of MN_ISA and an #include of
 * this file) and compiles it with that ISA's flags only (-mavx2 -mfma, -mavx512f ...,
 * never -march=native): the vector width, tile sizes and masked kernels of _gemm.h,
 * _gemm_small.h and _convpack.h follow from the flags. Importing the module runs no
 * vector code; _isa.pyx imports only the one the CPU supports. */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include "_gemm.h"
#include "_gemm_small.h"
#include "_convpack.h"
#include "_bf16.h"
#include "_amx.h"
#include "_isa.h"

#define MN_STR_(x) #x
#define MN_STR(x) MN_STR_(x)
#define MN_CAT_(a, b) a##b
#define MN_CAT(a, b) MN_CAT_(a, b)

#define MN_ENTRY(name, params) mn_##name,
static const mn_kernels mn_table = {
    MN_KERNELS_ABI, (int)sizeof(mn_kernels), MN_STR(MN_ISA),
    MN_MR, MN_MR_SHORT, MN_NR_F, MN_NR_D, MN_SMALL_OK,
    {{MN_TAB_1B, MN_TAB_1A}, {MN_TAB_2B, MN_TAB_2A}},
    {{MN_TAB_SLIDE_1, MN_TAB_SLIDE_1}, {MN_TAB_SLIDE_2B, 0}},
    MN_WG_SLIDE, MN_WG_SLIDE_MR, MN_TAB_ONE,
    MN_MR_BF16, MN_NR_BF16, MN_BF16_ESIZE,
    MN_GEMM_BC, MN_MR_BC,
    MN_KERNELS(MN_ENTRY)
};
#undef MN_ENTRY

#include "_peak_fma.h"   /* MN_PK_CHAINS, MN_PK_FUSED, MN_PK_FMA_BODY */
static double mn_peak_fma_f32(long long n, float a, float b, float x0) MN_PK_FMA_BODY(mn_vf, float)
static double mn_peak_fma_f64(long long n, double a, double b, double x0) MN_PK_FMA_BODY(mn_vd, double)

static const mn_peak_kernels mn_peak_table = {
    MN_KERNELS_ABI, MN_STR(MN_ISA), 8 * MN_VBYTES, MN_PK_CHAINS, MN_PK_FUSED,
    mn_peak_fma_f32, mn_peak_fma_f64
};

#if MN_AMX_OK
static const mn_bf16_kernels mn_amx_table = {
    MN_KERNELS_ABI, "amx", MN_AMX_MR, MN_AMX_NR, MN_AMX_KS, 2,
    mn_amx_pack_a, mn_amx_pack_b, mn_amx_kernel, mn_amx_begin, mn_amx_end,
    mn_amx_conv_pack_x, mn_amx_conv_pack_w, mn_amx_conv_units,
    mn_amx_wgrad_pack_g, mn_amx_wgrad_pack_x, mn_amx_wgrad_units
};
#endif

static int mn_add_capsule(PyObject* m, const char* attr, const void* table, const char* name)
{
    PyObject* cap = PyCapsule_New((void*)table, name, NULL);
    if (cap == NULL || PyModule_AddObject(m, attr, cap) < 0) {
        Py_XDECREF(cap);
        return -1;
    }
    return 0;
}

static struct PyModuleDef mn_kern_module = {
    PyModuleDef_HEAD_INIT, "mininet_ext._kern_" MN_STR(MN_ISA),
    "GEMM and convolution kernels for " MN_STR(MN_ISA) " (private: see mininet_ext._isa)",
    -1, NULL, NULL, NULL, NULL, NULL
};

PyMODINIT_FUNC MN_CAT(PyInit__kern_, MN_ISA)(void)
{
    PyObject* m = PyModule_Create(&mn_kern_module);
    if (m == NULL) return NULL;
    if (mn_add_capsule(m, "kernels", &mn_table, "mininet_ext.kernels") < 0
            || mn_add_capsule(m, "peak", &mn_peak_table, MN_PEAK_CAPSULE) < 0
#if MN_AMX_OK
            || mn_add_capsule(m, "amx", &mn_amx_table, MN_AMX_CAPSULE) < 0
#endif
            ) {
        Py_DECREF(m);
        return NULL;
    }
    return m;
}
