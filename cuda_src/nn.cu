// Fused neural-network kernels, the CUDA twins of mininet_ext's losses.pyx, norm.pyx,
// strided.pyx (row gather / scatter-add) and rnn.pyx (_lstm.h): the same formulas, so
// the two backends agree to rounding. Every array is compact.
#include "common.cuh"

// Block-wide reductions whose result every thread of the block receives. Two barriers
// at the end: the next call may rewrite the scratch only after everyone has read it.
template <typename T>
__device__ __forceinline__ T warp_max(T v) {
    for (int o = 16; o > 0; o >>= 1) {
        T u = __shfl_xor_sync(0xffffffffu, v, o);
        v = u > v ? u : v;   // NaN never wins: the exp below turns it into a NaN loss
    }
    return v;
}

template <typename T>
__device__ T block_max_all(T v) {
    __shared__ T part[MN_THREADS / 32];
    __shared__ T total;
    v = warp_max(v);
    if ((threadIdx.x & 31) == 0) part[threadIdx.x >> 5] = v;
    __syncthreads();
    if (threadIdx.x < 32) {
        T w = threadIdx.x < blockDim.x / 32 ? part[threadIdx.x] : part[0];
        w = warp_max(w);
        if (threadIdx.x == 0) total = w;
    }
    __syncthreads();
    T r = total;
    __syncthreads();
    return r;
}

__device__ double block_sum_all(double v) {
    __shared__ double total;
    v = block_sum(v);
    if (threadIdx.x == 0) total = v;
    __syncthreads();
    double r = total;
    __syncthreads();
    return r;
}

// softmax cross-entropy ------------------------------------------------------------
// One block per row: probs = softmax(z), loss[row] = log(sum(exp(z - m))) - (z[y] - m),
// never log(s) + m - z[y] (at |z| ~ 1e17 that cancels the loss away). A label outside
// [0, C) (the host checks them) gives a NaN loss instead of a read out of bounds.
template <typename T>
__device__ void softmax_xent(const T* z, const long long* y, T* probs, T* loss, long long N,
                             int C) {
    for (long long r = blockIdx.x; r < N; r += gridDim.x) {
        const T* zr = z + r * C;
        T* pr = probs + r * C;
        T m = -INFINITY;
        for (int j = threadIdx.x; j < C; j += blockDim.x) m = zr[j] > m ? zr[j] : m;
        m = block_max_all(m);
        double s = 0;
        for (int j = threadIdx.x; j < C; j += blockDim.x) {
            T e = exp(zr[j] - m);
            pr[j] = e;
            s += e;
        }
        s = block_sum_all(s);
        T inv = (T)(1.0 / s);
        for (int j = threadIdx.x; j < C; j += blockDim.x) pr[j] *= inv;
        if (threadIdx.x == 0) {
            long long label = y[r];
            loss[r] = (label >= 0 && label < C) ? (T)(log(s) - ((double)zr[label] - (double)m))
                                                : (T)NAN;
        }
    }
}

// loss = the mean of the N row losses (one block, the sum in double): the loss stays on
// the device, read by the host only when it asks
template <typename T>
__device__ void mean_rows(const T* rows, T* loss, long long N) {
    double s = 0;
    for (long long r = threadIdx.x; r < N; r += blockDim.x) s += rows[r];
    s = block_sum(s);
    if (threadIdx.x == 0) *loss = (T)(s / N);
}

// The same for short rows (the host picks it for up to 1024 classes): a warp per row,
// blockDim / 32 rows a block, reductions by shuffles alone (a 256-thread block for 10
// logits idled 246 threads)
__device__ __forceinline__ double warp_sum_all(double v) {
    for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
    return v;
}

template <typename T>
__device__ void softmax_xent_rows(const T* z, const long long* y, T* probs, T* loss,
                                  long long N, int C) {
    int lane = threadIdx.x & 31, warps = blockDim.x >> 5;
    for (long long r = (long long)blockIdx.x * warps + (threadIdx.x >> 5); r < N;
         r += (long long)gridDim.x * warps) {
        const T* zr = z + r * C;
        T* pr = probs + r * C;
        T m = -INFINITY;
        for (int j = lane; j < C; j += 32) m = zr[j] > m ? zr[j] : m;
        m = warp_max(m);
        double s = 0;
        for (int j = lane; j < C; j += 32) {
            T e = exp(zr[j] - m);
            pr[j] = e;
            s += e;
        }
        s = warp_sum_all(s);
        T inv = (T)(1.0 / s);
        for (int j = lane; j < C; j += 32) pr[j] *= inv;
        if (lane == 0) {
            long long label = y[r];
            loss[r] = (label >= 0 && label < C) ? (T)(log(s) - ((double)zr[label] - (double)m))
                                                : (T)NAN;
        }
    }
}

// out = (probs - onehot(y)) * g * scale, g the output grad on the device
template <typename T>
__device__ void softmax_xent_grad(const T* probs, const long long* y, const T* g, T* out,
                                  long long N, int C, T scale) {
    T s = *g * scale;
    GRID_STRIDE(e, N * C) {
        long long r = e / C;
        out[e] = probs[e] * s - (y[r] == e - r * C ? s : (T)0);
    }
}

// batch norm over (outer, C, inner): one block per channel ------------------------------
template <typename T>
__device__ double channel_sum(const T* x, const T* x2, long long outer, int C, long long inner,
                              int c, double shift) {
    double s = 0;
    for (long long e = threadIdx.x; e < outer * inner; e += blockDim.x) {
        long long k = ((e / inner) * C + c) * inner + e % inner;
        double v = x[k] - shift;
        s += x2 ? v * x2[k] : v * v;
    }
    return block_sum_all(s);
}

// Training mode: mean and biased variance in double (two passes, as the CPU), then
// xhat = (x - mean) * inv, y = xhat * w + b, inv = 1 / sqrt(var + eps).
template <typename T>
__device__ void batchnorm(const T* x, const T* w, const T* b, T* xhat, T* y, T* mean, T* var,
                          T* inv, long long outer, int C, long long inner, double eps) {
    long long n = outer * inner;
    for (int c = blockIdx.x; c < C; c += gridDim.x) {
        double s = 0;
        for (long long e = threadIdx.x; e < n; e += blockDim.x)
            s += x[((e / inner) * C + c) * inner + e % inner];
        double m = block_sum_all(s) / n;
        double q = channel_sum<T>(x, nullptr, outer, C, inner, c, m);
        double iv = 1.0 / sqrt(q / n + eps);
        if (threadIdx.x == 0) {
            mean[c] = (T)m;
            var[c] = (T)(q / n);
            inv[c] = (T)iv;
        }
        T fm = (T)m, fi = (T)iv, fw = w[c], fb = b[c];
        for (long long e = threadIdx.x; e < n; e += blockDim.x) {
            long long k = ((e / inner) * C + c) * inner + e % inner;
            T h = (x[k] - fm) * fi;
            xhat[k] = h;
            y[k] = h * fw + fb;
        }
    }
}

// dx = w * inv / n * (n g - sum(g) - xhat sum(g xhat)), dw = sum(g xhat), db = sum(g)
template <typename T>
__device__ void batchnorm_backward(const T* g, const T* xhat, const T* w, const T* inv, T* dx,
                                   T* dw, T* db, long long outer, int C, long long inner) {
    long long n = outer * inner;
    for (int c = blockIdx.x; c < C; c += gridDim.x) {
        double sg = 0, sgx = 0;
        for (long long e = threadIdx.x; e < n; e += blockDim.x) {
            long long k = ((e / inner) * C + c) * inner + e % inner;
            sg += g[k];
            sgx += (double)g[k] * xhat[k];
        }
        sg = block_sum_all(sg);
        sgx = block_sum_all(sgx);
        if (threadIdx.x == 0) {
            dw[c] = (T)sgx;
            db[c] = (T)sg;
        }
        T scale = (T)((double)w[c] * inv[c] / n), fsg = (T)sg, fsgx = (T)sgx;
        for (long long e = threadIdx.x; e < n; e += blockDim.x) {
            long long k = ((e / inner) * C + c) * inner + e % inner;
            dx[k] = scale * ((T)n * g[k] - fsg - xhat[k] * fsgx);
        }
    }
}

// layer norm and softmax over rows (the last dim of a compact (R, D) array): a warp per
// row, blockDim / 32 rows a block, the sums in double (the CPU's rows.pyx formulas)
#define MN_WARP_ROWS(r)                                                                  \
    for (long long r = (long long)blockIdx.x * (blockDim.x >> 5) + (threadIdx.x >> 5);   \
         r < R; r += (long long)gridDim.x * (blockDim.x >> 5))

// y = (x - mean) * rstd * w + b (w, b null: absent); mean and rstd = 1 / sqrt(var + eps)
// (biased variance, two passes) kept per row for the backward
template <typename T>
__device__ void layernorm(const T* x, const T* w, const T* b, T* y, T* mean, T* rstd,
                          long long R, long long D, double eps) {
    int lane = threadIdx.x & 31;
    MN_WARP_ROWS(r) {
        const T* xr = x + r * D;
        T* yr = y + r * D;
        double s = 0, q = 0;
        for (long long j = lane; j < D; j += 32) s += xr[j];
        double m = warp_sum_all(s) / D;
        for (long long j = lane; j < D; j += 32) q += ((double)xr[j] - m) * ((double)xr[j] - m);
        double iv = 1.0 / sqrt(warp_sum_all(q) / D + eps);
        if (lane == 0) {
            mean[r] = (T)m;
            rstd[r] = (T)iv;
        }
        T fm = (T)m, fi = (T)iv;
        for (long long j = lane; j < D; j += 32) {
            T h = (xr[j] - fm) * fi;
            if (w) h *= w[j];
            yr[j] = b ? h + b[j] : h;
        }
    }
}

// dx = rstd * (gw - mean(gw) - xhat * mean(gw * xhat)), gw = g * w, xhat = (x - m) * rstd
template <typename T>
__device__ void layernorm_backward(const T* g, const T* x, const T* mean, const T* rstd,
                                   const T* w, T* dx, long long R, long long D) {
    int lane = threadIdx.x & 31;
    MN_WARP_ROWS(r) {
        const T *gr = g + r * D, *xr = x + r * D;
        T m = mean[r], rs = rstd[r];
        double a = 0, c = 0;
        for (long long j = lane; j < D; j += 32) {
            double gw = w ? (double)gr[j] * (double)w[j] : (double)gr[j];
            a += gw;
            c += gw * (double)((xr[j] - m) * rs);
        }
        T ma = (T)(warp_sum_all(a) / D), mc = (T)(warp_sum_all(c) / D);
        for (long long j = lane; j < D; j += 32) {
            T gw = w ? gr[j] * w[j] : gr[j];
            dx[r * D + j] = rs * (gw - ma - (xr[j] - m) * rs * mc);
        }
    }
}

// dw = sum over rows of g * xhat, db = sum of g (either null: not wanted); a thread per
// column, the rows in order
template <typename T>
__device__ void layernorm_param_grads(const T* g, const T* x, const T* mean, const T* rstd,
                                      T* dw, T* db, long long R, long long D) {
    GRID_STRIDE(j, D) {
        double sw = 0, sb = 0;
        for (long long r = 0; r < R; r++) {
            double gv = g[r * D + j];
            sw += gv * (double)((x[r * D + j] - mean[r]) * rstd[r]);
            sb += gv;
        }
        if (dw) dw[j] = (T)sw;
        if (db) db[j] = (T)sb;
    }
}

// y = exp(x - max) / sum; a NaN in the row (which the max skips) makes every output NaN
template <typename T>
__device__ void softmax(const T* x, T* y, long long R, long long D) {
    int lane = threadIdx.x & 31;
    MN_WARP_ROWS(r) {
        const T* xr = x + r * D;
        T* yr = y + r * D;
        T m = D ? xr[0] : (T)0;
        for (long long j = lane; j < D; j += 32) m = xr[j] > m ? xr[j] : m;
        m = warp_max(m);
        double s = 0;
        for (long long j = lane; j < D; j += 32) {
            T e = exp(xr[j] - m);
            yr[j] = e;
            s += e;
        }
        T inv = (T)(1.0 / warp_sum_all(s));
        for (long long j = lane; j < D; j += 32) yr[j] *= inv;
    }
}

// dx = y * (g - sum(g * y))
template <typename T>
__device__ void softmax_backward(const T* y, const T* g, T* dx, long long R, long long D) {
    int lane = threadIdx.x & 31;
    MN_WARP_ROWS(r) {
        const T *yr = y + r * D, *gr = g + r * D;
        double s = 0;
        for (long long j = lane; j < D; j += 32) s += (double)gr[j] * (double)yr[j];
        T t = (T)warp_sum_all(s);
        for (long long j = lane; j < D; j += 32) dx[r * D + j] = yr[j] * (gr[j] - t);
    }
}

// embedding rows ------------------------------------------------------------------------
// out[i, :] = src[idx[i], :]; an index outside [0, rows) (the host checks them) gives NaN
template <typename T>
__device__ void take_rows(const T* src, const long long* idx, T* out, long long n, long long rows,
                          long long d) {
    GRID_STRIDE(e, n * d) {
        long long r = idx[e / d];
        out[e] = (r >= 0 && r < rows) ? src[r * d + e % d] : (T)NAN;
    }
}

// out[idx[i], :] += g[i, :]; repeated indices add up (atomics)
template <typename T>
__device__ void add_rows(const T* g, const long long* idx, T* out, long long n, long long rows,
                         long long d) {
    GRID_STRIDE(e, n * d) {
        long long r = idx[e / d];
        if (r >= 0 && r < rows) atomicAdd(out + r * d + e % d, g[e]);
    }
}

// LSTM step (B rows of n): the formulas of mininet_ext/_lstm.h -------------------------
template <typename T>
__device__ __forceinline__ T sigm(T x) { return (T)1 / ((T)1 + exp(-x)); }

template <typename T>
__device__ void lstm_forward(const T* z, const T* c, T* act, T* c_new, T* h_new, long long B,
                             long long n) {
    GRID_STRIDE(e, B * n) {
        long long r = e / n, j = e - r * n;
        const T* zr = z + r * 4 * n;
        T* a = act + r * 5 * n;
        T i = sigm(zr[j]), f = sigm(zr[n + j]), g = tanh(zr[2 * n + j]), o = sigm(zr[3 * n + j]);
        T cn = f * c[e] + i * g;
        T t = tanh(cn);
        a[j] = i; a[n + j] = f; a[2 * n + j] = g; a[3 * n + j] = o; a[4 * n + j] = t;
        c_new[e] = cn;
        h_new[e] = o * t;
    }
}

template <typename T>
__device__ void lstm_backward(const T* act, const T* c, const T* dh, const T* dc, T* dz,
                              T* dc_prev, long long B, long long n) {
    GRID_STRIDE(e, B * n) {
        long long r = e / n, j = e - r * n;
        const T* a = act + r * 5 * n;
        T* d = dz + r * 4 * n;
        T i = a[j], f = a[n + j], g = a[2 * n + j], o = a[3 * n + j], t = a[4 * n + j];
        T dct = dc[e] + dh[e] * o * ((T)1 - t * t);
        d[j] = dct * g * i * ((T)1 - i);
        d[n + j] = dct * c[e] * f * ((T)1 - f);
        d[2 * n + j] = dct * i * ((T)1 - g * g);
        d[3 * n + j] = dh[e] * t * o * ((T)1 - o);
        dc_prev[e] = dct * f;
    }
}

// dropout masks from a counter-based generator ------------------------------------------
// Philox-4x32-10 (Salmon et al., SC'11): element e's draw is a pure function of (seed,
// counter + e / 4), so a mask is reproducible from two numbers and independent of the
// launch shape. mask = (u < keep) * scale, u uniform in [0, 1) from 24 bits.
__device__ __forceinline__ void philox_round(unsigned int* x, unsigned int k0, unsigned int k1) {
    unsigned long long p0 = (unsigned long long)0xD2511F53u * x[0];
    unsigned long long p1 = (unsigned long long)0xCD9E8D57u * x[2];
    unsigned int y0 = (unsigned int)(p1 >> 32) ^ x[1] ^ k0, y1 = (unsigned int)p1;
    unsigned int y2 = (unsigned int)(p0 >> 32) ^ x[3] ^ k1, y3 = (unsigned int)p0;
    x[0] = y0; x[1] = y1; x[2] = y2; x[3] = y3;
}

__device__ unsigned int philox_word(unsigned long long seed, unsigned long long ctr, int lane) {
    unsigned int x[4] = {(unsigned int)ctr, (unsigned int)(ctr >> 32), 0u, 0u};
    unsigned int k0 = (unsigned int)seed, k1 = (unsigned int)(seed >> 32);
    for (int r = 0; r < 10; ++r) {
        philox_round(x, k0, k1);
        k0 += 0x9E3779B9u;
        k1 += 0xBB67AE85u;
    }
    return x[lane];
}

template <typename T>
__device__ void dropout_mask(T* mask, long long n, double keep, T scale, unsigned long long seed,
                             unsigned long long counter) {
    GRID_STRIDE(e, n) {
        unsigned int bits = philox_word(seed, counter + (unsigned long long)(e >> 2), (int)(e & 3));
        double u = (bits >> 8) * (1.0 / 16777216.0);
        mask[e] = u < keep ? scale : (T)0;
    }
}

#define MN_NN(T, S)                                                                          \
    extern "C" __global__ void softmax_xent_##S(const T* z, const long long* y, T* probs,   \
                                                T* loss, long long N, int C) {              \
        softmax_xent<T>(z, y, probs, loss, N, C);                                           \
    }                                                                                        \
    extern "C" __global__ void softmax_xent_rows_##S(const T* z, const long long* y,        \
                                                     T* probs, T* loss, long long N, int C) {\
        softmax_xent_rows<T>(z, y, probs, loss, N, C);                                      \
    }                                                                                        \
    extern "C" __global__ void mean_rows_##S(const T* rows, T* loss, long long N) {          \
        mean_rows<T>(rows, loss, N);                                                        \
    }                                                                                        \
    extern "C" __global__ void softmax_xent_grad_##S(const T* probs, const long long* y,    \
                                                     const T* g, T* out, long long N, int C,\
                                                     T scale) {                             \
        softmax_xent_grad<T>(probs, y, g, out, N, C, scale);                                \
    }                                                                                        \
    extern "C" __global__ void batchnorm_##S(const T* x, const T* w, const T* b, T* xhat,   \
                                             T* y, T* mean, T* var, T* inv, long long outer,\
                                             int C, long long inner, double eps) {          \
        batchnorm<T>(x, w, b, xhat, y, mean, var, inv, outer, C, inner, eps);               \
    }                                                                                        \
    extern "C" __global__ void batchnorm_backward_##S(const T* g, const T* xhat, const T* w,\
                                                      const T* inv, T* dx, T* dw, T* db,    \
                                                      long long outer, int C,               \
                                                      long long inner) {                    \
        batchnorm_backward<T>(g, xhat, w, inv, dx, dw, db, outer, C, inner);                \
    }                                                                                        \
    extern "C" __global__ void layernorm_##S(const T* x, const T* w, const T* b, T* y,      \
                                             T* mean, T* rstd, long long R, long long D,    \
                                             double eps) {                                  \
        layernorm<T>(x, w, b, y, mean, rstd, R, D, eps);                                    \
    }                                                                                        \
    extern "C" __global__ void layernorm_backward_##S(const T* g, const T* x, const T* mean,\
                                                      const T* rstd, const T* w, T* dx,     \
                                                      long long R, long long D) {           \
        layernorm_backward<T>(g, x, mean, rstd, w, dx, R, D);                               \
    }                                                                                        \
    extern "C" __global__ void layernorm_param_grads_##S(const T* g, const T* x,            \
                                                         const T* mean, const T* rstd,      \
                                                         T* dw, T* db, long long R,         \
                                                         long long D) {                     \
        layernorm_param_grads<T>(g, x, mean, rstd, dw, db, R, D);                           \
    }                                                                                        \
    extern "C" __global__ void softmax_##S(const T* x, T* y, long long R, long long D) {     \
        softmax<T>(x, y, R, D);                                                             \
    }                                                                                        \
    extern "C" __global__ void softmax_backward_##S(const T* y, const T* g, T* dx,          \
                                                    long long R, long long D) {             \
        softmax_backward<T>(y, g, dx, R, D);                                                \
    }                                                                                        \
    extern "C" __global__ void take_rows_##S(const T* src, const long long* idx, T* out,    \
                                             long long n, long long rows, long long d) {    \
        take_rows<T>(src, idx, out, n, rows, d);                                            \
    }                                                                                        \
    extern "C" __global__ void add_rows_##S(const T* g, const long long* idx, T* out,       \
                                            long long n, long long rows, long long d) {     \
        add_rows<T>(g, idx, out, n, rows, d);                                               \
    }                                                                                        \
    extern "C" __global__ void lstm_forward_##S(const T* z, const T* c, T* act, T* c_new,   \
                                                T* h_new, long long B, long long n) {       \
        lstm_forward<T>(z, c, act, c_new, h_new, B, n);                                     \
    }                                                                                        \
    extern "C" __global__ void lstm_backward_##S(const T* act, const T* c, const T* dh,     \
                                                 const T* dc, T* dz, T* dc_prev,            \
                                                 long long B, long long n) {                \
        lstm_backward<T>(act, c, dh, dc, dz, dc_prev, B, n);                                \
    }                                                                                        \
    extern "C" __global__ void dropout_mask_##S(T* mask, long long n, double keep, T scale,  \
                                                unsigned long long seed,                    \
                                                unsigned long long counter) {               \
        dropout_mask<T>(mask, n, keep, scale, seed, counter);                               \
    }

MN_NN(float, f32)
MN_NN(double, f64)
