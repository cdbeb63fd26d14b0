// Fused optimizer updates, in place on compact parameters (same math as mininet_ext/optim.pyx).
#include "common.cuh"

template <typename T>
__device__ void sgd(T* p, const T* g, T* v, long long n, T lr, T momentum, T dampening, T wd,
                    int nesterov, int first) {
    GRID_STRIDE(i, n) {
        T d = g[i] + wd * p[i];
        if (momentum != 0) {
            T buf = first ? d : momentum * v[i] + (1 - dampening) * d;
            v[i] = buf;
            d = nesterov ? d + momentum * buf : buf;
        }
        p[i] -= lr * d;
    }
}

template <typename T>
__device__ void adam(T* p, const T* g, T* m, T* v, long long n, T lr, T b1, T b2, T eps, T wd,
                     int decoupled, T c1, T c2) {
    GRID_STRIDE(i, n) {
        T gi = g[i];
        if (decoupled) p[i] -= lr * wd * p[i];
        else gi += wd * p[i];
        T mi = b1 * m[i] + (1 - b1) * gi;
        T vi = b2 * v[i] + (1 - b2) * gi * gi;
        m[i] = mi;
        v[i] = vi;
        p[i] -= lr * (mi / c1) / (sqrt(vi / c2) + eps);
    }
}

#define MN_OPTIM(T, S)                                                                        \
    extern "C" __global__ void sgd_##S(T* p, const T* g, T* v, long long n, T lr, T momentum, \
                                       T dampening, T wd, int nesterov, int first) {          \
        sgd<T>(p, g, v, n, lr, momentum, dampening, wd, nesterov, first);                     \
    }                                                                                          \
    extern "C" __global__ void adam_##S(T* p, const T* g, T* m, T* v, long long n, T lr,      \
                                        T b1, T b2, T eps, T wd, int decoupled, T c1, T c2) { \
        adam<T>(p, g, m, v, n, lr, b1, b2, eps, wd, decoupled, c1, c2);                       \
    }

MN_OPTIM(float, f32)
MN_OPTIM(double, f64)
