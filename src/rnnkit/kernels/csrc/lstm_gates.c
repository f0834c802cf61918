/* The element-wise gate math of one LSTM step (with or without peepholes), forward and
 * backward, fused into one pass over the batch. The recurrent matrix product stays in torch;
 * this file does everything between two of them. The equations and their gradients are
 * those of rnnkit/kernels/lstm_bptt.py (its docstring), the Python twin of this file.
 *
 * Layout: gates (B, 4H) in torch.nn's block order i, f, g, o; states (B, H); the mask is one
 * byte per sequence (1 at a real step) or NULL when every step is real; the peephole weights
 * p_i, p_f, p_o are (H,) or NULL for the standard LSTM. Everything is contiguous.
 *
 * Built with -ffast-math so that gcc calls glibc's vector tanh (libmvec) in the inner loops;
 * sigma(x) is written as (1 + tanh(x / 2)) / 2, the same function with one transcendental.
 */
#include <math.h>
#include <stdint.h>
#include <string.h>

#define DEFINE_LSTM_STEPS(real, suffix, tanh_fn)                                             \
                                                                                              \
/* Forward. gates holds the pre-activations a = W_ih x_t + b + W_hh h_{t-1} on entry and the  \
 * activations (i, f, g, o) on return. c_new receives c_t before masking; h_next, c_next the  \
 * carried state (the old one at a padded step); out the output row (zero at a padded step). \
 */                                                                                           \
void lstm_forward_##suffix(long batch, long hidden, real *gates, const real *h_prev,          \
                           const real *c_prev, const real *p_i, const real *p_f,              \
                           const real *p_o, const uint8_t *mask, real *c_new, real *h_next,   \
                           real *c_next, real *out)                                           \
{                                                                                             \
    for (long b = 0; b < batch; b++) {                                                        \
        real *a = gates + b * 4 * hidden;                                                     \
        const real *cp = c_prev + b * hidden, *hp = h_prev + b * hidden;                      \
        real *cn = c_new + b * hidden, *hn = h_next + b * hidden;                             \
        real *cx = c_next + b * hidden, *y = out + b * hidden;                                \
        const int real_step = mask == NULL || mask[b];                                        \
        _Pragma("omp simd")                                                                   \
        for (long j = 0; j < hidden; j++) {                                                   \
            real ai = a[j], af = a[hidden + j], ag = a[2 * hidden + j];                       \
            real ao = a[3 * hidden + j], c = cp[j];                                           \
            if (p_i) {                                                                        \
                ai += p_i[j] * c;                                                             \
                af += p_f[j] * c;                                                             \
            }                                                                                 \
            real i = (real)0.5 + (real)0.5 * tanh_fn((real)0.5 * ai);                         \
            real f = (real)0.5 + (real)0.5 * tanh_fn((real)0.5 * af);                         \
            real g = tanh_fn(ag);                                                             \
            real cell = f * c + i * g;                                                        \
            if (p_o)                                                                          \
                ao += p_o[j] * cell;                                                          \
            real o = (real)0.5 + (real)0.5 * tanh_fn((real)0.5 * ao);                         \
            real h = o * tanh_fn(cell);                                                       \
            a[j] = i;                                                                         \
            a[hidden + j] = f;                                                                \
            a[2 * hidden + j] = g;                                                            \
            a[3 * hidden + j] = o;                                                            \
            cn[j] = cell;                                                                     \
            hn[j] = real_step ? h : hp[j];                                                    \
            cx[j] = real_step ? cell : c;                                                     \
            y[j] = real_step ? h : (real)0;                                                   \
        }                                                                                     \
    }                                                                                         \
}                                                                                             \
                                                                                              \
/* Backward through one step. On entry dh, dc are the gradients reaching the carried state    \
 * after the step; d_out the output's. Writes d_gates (dL/da, B x 4H, zero at padded steps),   \
 * replaces dc by the gradient for c_{t-1}, and dh by its carried part (zero at real steps:    \
 * the caller then adds d_gates W_hh). Adds the peephole gradients into dp_* (double, H).      \
 */                                                                                           \
void lstm_backward_##suffix(long batch, long hidden, const real *gates, const real *c_prev,   \
                            const real *c_new, const real *p_i, const real *p_f,              \
                            const real *p_o, const uint8_t *mask, const real *d_out,          \
                            real *dh, real *dc, real *d_gates, double *dp_i, double *dp_f,    \
                            double *dp_o)                                                     \
{                                                                                             \
    for (long b = 0; b < batch; b++) {                                                        \
        real *da = d_gates + b * 4 * hidden;                                                  \
        if (mask != NULL && !mask[b]) {                                                       \
            memset(da, 0, sizeof(real) * 4 * hidden);                                         \
            continue;                                                                         \
        }                                                                                     \
        const real *a = gates + b * 4 * hidden, *cp = c_prev + b * hidden;                    \
        const real *cn = c_new + b * hidden, *dy = d_out + b * hidden;                        \
        real *dhb = dh + b * hidden, *dcb = dc + b * hidden;                                  \
        _Pragma("omp simd")                                                                   \
        for (long j = 0; j < hidden; j++) {                                                   \
            real i = a[j], f = a[hidden + j], g = a[2 * hidden + j], o = a[3 * hidden + j];   \
            real tc = tanh_fn(cn[j]);                                                         \
            real dh_new = dy[j] + dhb[j];                                                     \
            real da_o = dh_new * tc * o * ((real)1 - o);                                      \
            real dc_new = dcb[j] + dh_new * o * ((real)1 - tc * tc);                          \
            if (p_o)                                                                          \
                dc_new += p_o[j] * da_o;                                                      \
            real da_i = dc_new * g * i * ((real)1 - i);                                       \
            real da_f = dc_new * cp[j] * f * ((real)1 - f);                                   \
            real da_g = dc_new * i * ((real)1 - g * g);                                       \
            real dc_prev = dc_new * f;                                                        \
            if (p_i) {                                                                        \
                dc_prev += p_i[j] * da_i + p_f[j] * da_f;                                     \
            }                                                                                 \
            da[j] = da_i;                                                                     \
            da[hidden + j] = da_f;                                                            \
            da[2 * hidden + j] = da_g;                                                        \
            da[3 * hidden + j] = da_o;                                                        \
            dcb[j] = dc_prev;                                                                 \
            dhb[j] = (real)0;                                                                 \
        }                                                                                     \
        if (p_i) {                                                                            \
            _Pragma("omp simd")                                                               \
            for (long j = 0; j < hidden; j++) {                                               \
                dp_i[j] += (double)(da[j] * cp[j]);                                           \
                dp_f[j] += (double)(da[hidden + j] * cp[j]);                                  \
                dp_o[j] += (double)(da[3 * hidden + j] * cn[j]);                              \
            }                                                                                 \
        }                                                                                     \
    }                                                                                         \
}

DEFINE_LSTM_STEPS(float, f32, tanhf)
DEFINE_LSTM_STEPS(double, f64, tanh)
