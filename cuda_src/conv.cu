// Convolution and pooling: the same layouts as mininet_ext/conv.pyx.
// col is (C*kh*kw, N, OH, OW); col2im gathers (no atomics) instead of scattering.
#include "common.cuh"

struct Geom {
    int N, C, H, W, kh, kw, sh, sw, ph, pw, dh, dw, OH, OW;
};

template <typename T>
__device__ void im2col(const T* x, long long sn, long long sc, long long sy, long long sx,
                       T* col, Geom g) {
    long long n_out = (long long)g.C * g.kh * g.kw * g.N * g.OH * g.OW;
    GRID_STRIDE(e, n_out) {
        int ow = e % g.OW, oh = (e / g.OW) % g.OH, n = (e / ((long long)g.OW * g.OH)) % g.N;
        long long r = e / ((long long)g.OW * g.OH * g.N);
        int j = r % g.kw, i = (r / g.kw) % g.kh, c = r / (g.kw * g.kh);
        int ih = oh * g.sh - g.ph + i * g.dh, iw = ow * g.sw - g.pw + j * g.dw;
        col[e] = (ih >= 0 && ih < g.H && iw >= 0 && iw < g.W)
                     ? x[n * sn + c * sc + ih * sy + iw * sx] : T(0);
    }
}

// dx[n, c, ih, iw] = sum over taps (i, j) whose output position lands on the grid.
template <typename T>
__device__ void col2im(const T* col, T* dx, Geom g) {
    long long n_out = (long long)g.N * g.C * g.H * g.W;
    GRID_STRIDE(e, n_out) {
        int iw = e % g.W, ih = (e / g.W) % g.H, c = (e / ((long long)g.W * g.H)) % g.C;
        int n = e / ((long long)g.W * g.H * g.C);
        T s = 0;
        for (int i = 0; i < g.kh; ++i) {
            int y = ih + g.ph - i * g.dh;
            if (y < 0 || y % g.sh) continue;
            int oh = y / g.sh;
            if (oh >= g.OH) continue;
            for (int j = 0; j < g.kw; ++j) {
                int xx = iw + g.pw - j * g.dw;
                if (xx < 0 || xx % g.sw) continue;
                int ow = xx / g.sw;
                if (ow >= g.OW) continue;
                long long r = ((long long)c * g.kh + i) * g.kw + j;
                s += col[((r * g.N + n) * g.OH + oh) * g.OW + ow];
            }
        }
        dx[e] = s;
    }
}

template <typename T>
__device__ void to_nchw(const T* y, const T* bias, T* out, int K, int N, long long P) {
    GRID_STRIDE(e, (long long)N * K * P) {
        long long p = e % P;
        int k = (e / P) % K, n = e / (P * K);
        out[e] = y[((long long)k * N + n) * P + p] + (bias ? bias[k] : T(0));
    }
}

template <typename T>
__device__ void from_nchw(const T* g, T* out, int K, int N, long long P) {
    GRID_STRIDE(e, (long long)N * K * P) {
        long long p = e % P;
        int n = (e / P) % N, k = e / (P * N);
        out[e] = g[((long long)n * K + k) * P + p];
    }
}

// db[k] = sum of the (K, N*P) rows: one block per channel.
template <typename T>
__device__ void row_sums(const T* rows, T* db, long long len) {
    const T* r = rows + blockIdx.x * len;
    double s = 0;
    for (long long i = threadIdx.x; i < len; i += blockDim.x) s += r[i];
    s = block_sum(s);
    if (threadIdx.x == 0) db[blockIdx.x] = (T)s;
}

template <typename T>
__device__ void maxpool(const T* x, T* out, long long* idx, Geom g) {
    long long n_out = (long long)g.N * g.C * g.OH * g.OW;
    GRID_STRIDE(e, n_out) {
        int ow = e % g.OW, oh = (e / g.OW) % g.OH;
        long long plane = e / ((long long)g.OW * g.OH);
        const T* src = x + plane * g.H * g.W;
        long long bi = -1;
        T best = 0;
        for (int i = 0; i < g.kh; ++i) {
            int ih = oh * g.sh - g.ph + i * g.dh;
            if (ih < 0 || ih >= g.H) continue;
            for (int j = 0; j < g.kw; ++j) {
                int iw = ow * g.sw - g.pw + j * g.dw;
                if (iw < 0 || iw >= g.W) continue;
                T v = src[ih * g.W + iw];
                if (bi < 0 || v > best || v != v) { best = v; bi = ih * g.W + iw; }  // last NaN wins, as PyTorch
            }
        }
        out[e] = best;
        idx[e] = bi;
    }
}

template <typename T>
__device__ void maxpool_backward(const T* gout, const long long* idx, T* dx, Geom g) {
    long long n_out = (long long)g.N * g.C * g.OH * g.OW;
    GRID_STRIDE(e, n_out) {
        long long plane = e / ((long long)g.OW * g.OH);
        if (idx[e] >= 0) atomicAdd(dx + plane * g.H * g.W + idx[e], gout[e]);
    }
}

template <typename T>
__device__ void maxpool_gather(const T* h, const long long* idx, T* out, Geom g) {
    long long n_out = (long long)g.N * g.C * g.OH * g.OW;
    GRID_STRIDE(e, n_out) {
        long long plane = e / ((long long)g.OW * g.OH);
        out[e] = idx[e] >= 0 ? h[plane * g.H * g.W + idx[e]] : T(0);
    }
}

// Window mean with zero padding counted (PyTorch's default).
template <typename T>
__device__ void avgpool(const T* x, T* out, Geom g) {
    long long n_out = (long long)g.N * g.C * g.OH * g.OW;
    T scale = T(1) / (g.kh * g.kw);
    GRID_STRIDE(e, n_out) {
        int ow = e % g.OW, oh = (e / g.OW) % g.OH;
        const T* src = x + (e / ((long long)g.OW * g.OH)) * g.H * g.W;
        T s = 0;
        for (int i = 0; i < g.kh; ++i) {
            int ih = oh * g.sh - g.ph + i;
            if (ih < 0 || ih >= g.H) continue;
            for (int j = 0; j < g.kw; ++j) {
                int iw = ow * g.sw - g.pw + j;
                if (iw >= 0 && iw < g.W) s += src[ih * g.W + iw];
            }
        }
        out[e] = s * scale;
    }
}

// The adjoint: each input gathers the output grads of the windows that cover it.
template <typename T>
__device__ void avgpool_backward(const T* gout, T* dx, Geom g) {
    long long n_out = (long long)g.N * g.C * g.H * g.W;
    T scale = T(1) / (g.kh * g.kw);
    GRID_STRIDE(e, n_out) {
        int iw = e % g.W, ih = (e / g.W) % g.H;
        const T* src = gout + (e / ((long long)g.W * g.H)) * g.OH * g.OW;
        T s = 0;
        for (int i = 0; i < g.kh; ++i) {
            int y = ih + g.ph - i;
            if (y < 0 || y % g.sh || y / g.sh >= g.OH) continue;
            for (int j = 0; j < g.kw; ++j) {
                int xx = iw + g.pw - j;
                if (xx < 0 || xx % g.sw || xx / g.sw >= g.OW) continue;
                s += src[(y / g.sh) * g.OW + xx / g.sw];
            }
        }
        dx[e] = s * scale;
    }
}

#define MN_CONV(T, S)                                                                          \
    extern "C" __global__ void im2col_##S(const T* x, long long sn, long long sc, long long sy, \
                                          long long sx, T* col, Geom g) {                      \
        im2col<T>(x, sn, sc, sy, sx, col, g);                                                  \
    }                                                                                           \
    extern "C" __global__ void col2im_##S(const T* col, T* dx, Geom g) { col2im<T>(col, dx, g); } \
    extern "C" __global__ void to_nchw_##S(const T* y, const T* b, T* out, int K, int N,        \
                                           long long P) { to_nchw<T>(y, b, out, K, N, P); }     \
    extern "C" __global__ void from_nchw_##S(const T* g, T* out, int K, int N, long long P) {   \
        from_nchw<T>(g, out, K, N, P);                                                          \
    }                                                                                           \
    extern "C" __global__ void row_sums_##S(const T* rows, T* db, long long len) {              \
        row_sums<T>(rows, db, len);                                                             \
    }                                                                                           \
    extern "C" __global__ void maxpool_##S(const T* x, T* out, long long* idx, Geom g) {        \
        maxpool<T>(x, out, idx, g);                                                             \
    }                                                                                           \
    extern "C" __global__ void maxpool_backward_##S(const T* go, const long long* idx, T* dx,   \
                                                    Geom g) { maxpool_backward<T>(go, idx, dx, g); } \
    extern "C" __global__ void maxpool_gather_##S(const T* h, const long long* idx, T* out,     \
                                                  Geom g) { maxpool_gather<T>(h, idx, out, g); } \
    extern "C" __global__ void avgpool_##S(const T* x, T* out, Geom g) { avgpool<T>(x, out, g); } \
    extern "C" __global__ void avgpool_backward_##S(const T* go, T* dx, Geom g) {               \
        avgpool_backward<T>(go, dx, g);                                                         \
    }

MN_CONV(float, f32)
MN_CONV(double, f64)
