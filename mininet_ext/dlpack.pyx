# cython: boundscheck=False, wraparound=False, cdivision=True
"""DLPack capsules, the zero-copy exchange of numpy, PyTorch, JAX, CuPy (DLPack 1.0).

Mechanism only: export() wraps memory that `owner` keeps alive in a capsule, consume()
takes one made elsewhere. Which dtypes and devices mininet accepts is decided in
mininet/backend/dlpack.py.
"""
from cpython.buffer cimport PyBUF_WRITABLE
from cpython.pycapsule cimport PyCapsule_GetPointer, PyCapsule_IsValid, PyCapsule_New, PyCapsule_SetName
from cpython.ref cimport PyObject
from libc.stdint cimport int32_t, int64_t, uint8_t, uint16_t, uint32_t, uint64_t

cdef extern from *:
    """
    #include <stdint.h>
    #include <stdlib.h>
    /* dlpack.h 1.0: only the layout matters */
    typedef struct { int32_t device_type; int32_t device_id; } DLDevice;
    typedef struct { uint8_t code; uint8_t bits; uint16_t lanes; } DLDataType;
    typedef struct { void* data; DLDevice device; int32_t ndim; DLDataType dtype;
                     int64_t* shape; int64_t* strides; uint64_t byte_offset; } DLTensor;
    typedef struct DLManagedTensor { DLTensor dl_tensor; void* manager_ctx;
                                     void (*deleter)(struct DLManagedTensor*); } DLManagedTensor;
    typedef struct { uint32_t major; uint32_t minor; } DLPackVersion;
    typedef struct DLManagedTensorVersioned { DLPackVersion version; void* manager_ctx;
        void (*deleter)(struct DLManagedTensorVersioned*); uint64_t flags;
        DLTensor dl_tensor; } DLManagedTensorVersioned;

    /* The consumer may free its tensor on any thread, with or without the GIL. */
    static void mn_release(void* block, void* owner) {
        if (owner != NULL && Py_IsInitialized()) {
            PyGILState_STATE st = PyGILState_Ensure();
            Py_DECREF((PyObject*)owner);
            PyGILState_Release(st);
        }
        free(block);
    }
    static void mn_deleter(DLManagedTensor* m) { mn_release(m, m->manager_ctx); }
    static void mn_deleter_v(DLManagedTensorVersioned* m) { mn_release(m, m->manager_ctx); }

    /* One block: the managed struct, then shape and strides. Holds a reference to owner. */
    static void* mn_dlpack_new(int versioned, int32_t ndim, PyObject* owner, DLTensor** t) {
        size_t head = versioned ? sizeof(DLManagedTensorVersioned) : sizeof(DLManagedTensor);
        head = (head + 7) & ~(size_t)7;
        char* block = (char*)calloc(1, head + 2 * sizeof(int64_t) * (size_t)(ndim > 0 ? ndim : 1));
        if (block == NULL) return NULL;
        if (versioned) {
            DLManagedTensorVersioned* m = (DLManagedTensorVersioned*)block;
            m->version.major = 1; m->version.minor = 0;
            m->manager_ctx = owner; m->deleter = mn_deleter_v; *t = &m->dl_tensor;
        } else {
            DLManagedTensor* m = (DLManagedTensor*)block;
            m->manager_ctx = owner; m->deleter = mn_deleter; *t = &m->dl_tensor;
        }
        (*t)->ndim = ndim;
        (*t)->shape = (int64_t*)(block + head);
        (*t)->strides = (*t)->shape + ndim;
        Py_INCREF(owner);
        return block;
    }
    static void mn_dlpack_free(void* block, int versioned) {
        if (versioned) mn_deleter_v((DLManagedTensorVersioned*)block);
        else mn_deleter((DLManagedTensor*)block);
    }
    static void mn_set_flags(void* block, uint64_t flags) {
        ((DLManagedTensorVersioned*)block)->flags = flags;
    }

    /* A capsule nobody consumed frees its tensor; a consumer renamed it to used_... */
    static void mn_capsule_free(PyObject* cap, const char* name, int versioned) {
        PyObject *type, *value, *tb;
        void* block;
        if (!PyCapsule_IsValid(cap, name)) return;
        PyErr_Fetch(&type, &value, &tb);
        block = PyCapsule_GetPointer(cap, name);
        if (block != NULL) mn_dlpack_free(block, versioned);
        else PyErr_WriteUnraisable(cap);
        PyErr_Restore(type, value, tb);
    }
    static void mn_capsule_destructor(PyObject* cap) { mn_capsule_free(cap, "dltensor", 0); }
    static void mn_capsule_destructor_v(PyObject* cap) {
        mn_capsule_free(cap, "dltensor_versioned", 1);
    }
    static void mn_call_deleter(void* block, int versioned) {
        if (versioned) {
            DLManagedTensorVersioned* m = (DLManagedTensorVersioned*)block;
            if (m->deleter) m->deleter(m);
        } else {
            DLManagedTensor* m = (DLManagedTensor*)block;
            if (m->deleter) m->deleter(m);
        }
    }
    """
    ctypedef struct DLDevice:
        int32_t device_type
        int32_t device_id
    ctypedef struct DLDataType:
        uint8_t code
        uint8_t bits
        uint16_t lanes
    ctypedef struct DLTensor:
        void* data
        DLDevice device
        int32_t ndim
        DLDataType dtype
        int64_t* shape
        int64_t* strides
        uint64_t byte_offset
    ctypedef struct DLPackVersion:
        uint32_t major
        uint32_t minor
    ctypedef struct DLManagedTensor:
        DLTensor dl_tensor
    ctypedef struct DLManagedTensorVersioned:
        DLPackVersion version
        uint64_t flags
        DLTensor dl_tensor
    void* mn_dlpack_new(int versioned, int32_t ndim, PyObject* owner, DLTensor** t)
    void mn_dlpack_free(void* block, int versioned)
    void mn_set_flags(void* block, uint64_t flags)
    void mn_capsule_destructor(object cap) noexcept
    void mn_capsule_destructor_v(object cap) noexcept
    void mn_call_deleter(void* block, int versioned)

FLAG_READ_ONLY = 1
FLAG_IS_COPIED = 2


def export(object owner, size_t address, tuple shape, tuple strides, int code, int bits,
           int device_type, int device_id, bint versioned, uint64_t flags=0):
    """A capsule ("dltensor_versioned", or the legacy "dltensor") over the memory at
    address, strides in items; it holds a reference to owner until its deleter runs."""
    cdef DLTensor* t = NULL
    cdef int32_t ndim = len(shape), i
    cdef void* block = mn_dlpack_new(versioned, ndim, <PyObject*>owner, &t)
    if block == NULL:
        raise MemoryError("DLPack: cannot allocate the tensor description")
    try:
        t.data = <void*>address
        t.device.device_type, t.device.device_id = device_type, device_id
        t.dtype.code, t.dtype.bits, t.dtype.lanes = code, bits, 1
        for i in range(ndim):
            t.shape[i], t.strides[i] = shape[i], strides[i]
        if versioned:
            mn_set_flags(block, flags)
            return PyCapsule_New(block, b"dltensor_versioned", mn_capsule_destructor_v)
        return PyCapsule_New(block, b"dltensor", mn_capsule_destructor)
    except BaseException:
        mn_dlpack_free(block, versioned)
        raise


cdef class Imported:
    """A tensor consumed from a capsule; the producer's deleter runs when this is freed.
    After expose(), it exports bytes of that memory through the buffer protocol."""
    cdef void* block
    cdef bint versioned
    cdef char* start
    cdef Py_ssize_t length
    cdef Py_ssize_t shape1[1]
    cdef Py_ssize_t strides1[1]
    cdef readonly size_t address           # data + byte_offset: element 0
    cdef readonly tuple shape
    cdef readonly object strides           # in items; None: compact (legacy producers)
    cdef readonly int device_type, device_id, code, bits, lanes
    cdef readonly bint read_only

    def __dealloc__(self):
        if self.block != NULL:
            mn_call_deleter(self.block, self.versioned)
            self.block = NULL

    def expose(self, Py_ssize_t start, Py_ssize_t nbytes):
        """Export bytes [address + start, address + start + nbytes) from now on."""
        self.start = <char*>self.address + start
        self.length = nbytes

    def __getbuffer__(self, Py_buffer* view, int flags):
        if self.read_only and (flags & PyBUF_WRITABLE):
            raise BufferError("DLPack: the producer marked this tensor read-only")
        self.shape1[0] = self.length
        self.strides1[0] = 1
        view.buf = self.start
        view.obj = self
        view.len = self.length
        view.readonly = self.read_only
        view.itemsize = 1
        view.format = "B"
        view.ndim = 1
        view.shape = self.shape1
        view.strides = self.strides1
        view.suboffsets = NULL
        view.internal = NULL

    def __releasebuffer__(self, Py_buffer* view):
        pass


def consume(object capsule):
    """Take ownership of an unused DLPack capsule (renamed used_..., as the protocol says)."""
    cdef Imported out = Imported.__new__(Imported)
    cdef DLManagedTensorVersioned* mv
    cdef DLTensor* t
    cdef int i
    if PyCapsule_IsValid(capsule, b"dltensor_versioned"):
        mv = <DLManagedTensorVersioned*>PyCapsule_GetPointer(capsule, b"dltensor_versioned")
        if mv.version.major != 1:   # not ours to read: leave it to its producer
            raise BufferError(f"DLPack version {mv.version.major}.{mv.version.minor} is not "
                              "supported (mininet reads 1.x)")
        PyCapsule_SetName(capsule, b"used_dltensor_versioned")
        out.block, out.versioned = mv, True
        t = &mv.dl_tensor
        out.read_only = (mv.flags & FLAG_READ_ONLY) != 0
    elif PyCapsule_IsValid(capsule, b"dltensor"):
        out.block = PyCapsule_GetPointer(capsule, b"dltensor")
        PyCapsule_SetName(capsule, b"used_dltensor")
        t = &(<DLManagedTensor*>out.block).dl_tensor
    else:
        raise TypeError("not a DLPack capsule, or one already consumed (a capsule is read once)")
    # from here `out` owns the tensor: any error below frees it through the deleter
    if t.ndim < 0 or (t.ndim > 0 and t.shape == NULL):
        raise BufferError(f"DLPack: malformed tensor (ndim {t.ndim})")
    out.address = <size_t>t.data + <size_t>t.byte_offset
    out.shape = tuple([t.shape[i] for i in range(t.ndim)])
    out.strides = None if t.strides == NULL else tuple([t.strides[i] for i in range(t.ndim)])
    out.device_type, out.device_id = t.device.device_type, t.device.device_id
    out.code, out.bits, out.lanes = t.dtype.code, t.dtype.bits, t.dtype.lanes
    return out
