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
    MN_MR_BF16, MN_NR_BF16, MN_BF16_ESIZE,
    MN_KERNELS(MN_ENTRY)
};
#undef MN_ENTRY

static struct PyModuleDef mn_kern_module = {
    PyModuleDef_HEAD_INIT, "mininet_ext._kern_" MN_STR(MN_ISA),
    "GEMM and convolution kernels for " MN_STR(MN_ISA) " (private: see mininet_ext._isa)",
    -1, NULL, NULL, NULL, NULL, NULL
};

PyMODINIT_FUNC MN_CAT(PyInit__kern_, MN_ISA)(void)
{
    PyObject* m = PyModule_Create(&mn_kern_module);
    PyObject* cap = m ? PyCapsule_New((void*)&mn_table, "mininet_ext.kernels", NULL) : NULL;
    if (cap == NULL || PyModule_AddObject(m, "kernels", cap) < 0) {
        Py_XDECREF(cap);
        Py_XDECREF(m);
        return NULL;
    }
    return m;
}
