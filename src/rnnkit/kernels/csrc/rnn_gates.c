/* The element-wise math of one Elman RNN step, h_t = f(a_t) with f tanh or relu, forward
 * and backward, fused into one pass over the batch. The recurrent matrix products stay in
 * torch; this file does everything between two of them. The equations and their gradients
 * are those of rnnkit/kernels/rnn_bptt.py (its docstring), the Python twin of this file.
 *
 * Layout: rows (B, H); the mask is one byte per sequence (1 at a real step) or NULL when every
 * step is real. Everything is contiguous; optional arrays are NULL when absent. bfloat16
 * arrays hold the top 16 bits of a float32. The numeric helpers are in gates.h.
 */
#include "gates.h"

/* f(a) and f'(a) written through h = f(a): tanh' = 1 - h^2; relu' = 1[h > 0], 0 at a = 0 as
 * in torch. */
static inline float activate(float a, int relu) { return relu ? (a > 0.0f ? a : 0.0f) : tanh_f32(a); }
static inline float slope(float h, int relu) { return relu ? (float)(h > 0.0f) : 1.0f - h * h; }

/* Forward. pre holds W_xh x_t + b_xh + b_hh on entry (or W_xh x_t, with the biases' sum in
 * bias: (H,) or NULL), rec (or rec_bf16) W_hh h_{t-1}; on return pre holds h_t = f(a_t)
 * before masking. h_next receives the carried state (the old one at a padded step),
 * h_next_bf16 its bfloat16 copy, out the output (zero at a padded step). relu: 1 for
 * f = relu, 0 for tanh.
 */
void rnn_forward(long batch, long hidden, int relu, float *pre, const float *rec,
                 const uint16_t *rec_bf16, const float *bias, const float *h_prev,
                 const uint8_t *mask, float *h_next, float *out, uint16_t *h_next_bf16)
{
    SPLIT_FOR(SPLIT_STEP(batch, hidden),
    for (long b = 0; b < batch; b++) {
        float *a = pre + b * hidden;
        const float *rb = rec ? rec + b * hidden : NULL;
        const uint16_t *rb16 = rec_bf16 ? rec_bf16 + b * hidden : NULL;
        const float *hp = h_prev + b * hidden;
        float *hx = h_next + b * hidden, *y = out + b * hidden;
        const int real_step = mask == NULL || mask[b];
        ADD_BIAS(a, bias, hidden)
        SPECIALISE(low, rb == NULL,
        SPECIALISE(use_relu, relu,
        _Pragma("omp simd")
        for (long j = 0; j < hidden; j++) {
            float s = a[j] + PRODUCT_AT(low, rb, rb16, j);
            float h = activate(s, use_relu);
            a[j] = h;
            hx[j] = real_step ? h : hp[j];
            y[j] = real_step ? h : 0.0f;
        }
        ))
        if (h_next_bf16) {
            uint16_t *hb = h_next_bf16 + b * hidden;
            _Pragma("omp simd") for (long j = 0; j < hidden; j++) hb[j] = to_bf16(hx[j]);
        }
    })
}

/* Backward through one step. On entry dh + rec (or rec_bf16) is the gradient reaching the
 * carried state after the step (rec: the previous step's da W_hh, absent at the first),
 * d_out the output's; h_new is the forward's f(a_t). Writes da = dL/da_t (zero at padded
 * steps) and its bfloat16 copy; replaces dh by its carried part (zero at a real step: the
 * caller adds da W_hh next). Adds the bias gradient, shared by b_xh and b_hh, into d_bias
 * (double, H).
 */
void rnn_backward(long batch, long hidden, int relu, const float *h_new, const uint8_t *mask,
                  const float *d_out, const float *rec, const uint16_t *rec_bf16, float *dh,
                  float *da, uint16_t *da_bf16, double *d_bias)
{
    SPLIT_FOR(SPLIT_STEP(batch, hidden),
    for (long b = 0; b < batch; b++) {
        float *d = da + b * hidden, *dhb = dh + b * hidden;
        const float *rb = rec ? rec + b * hidden : NULL;
        const uint16_t *rb16 = rec_bf16 ? rec_bf16 + b * hidden : NULL;
        if (rb || rb16) {
            SPECIALISE(low, rb == NULL,
            _Pragma("omp simd")
            for (long j = 0; j < hidden; j++) dhb[j] += PRODUCT_AT(low, rb, rb16, j);
            )
        }
        if (mask != NULL && !mask[b]) {
            memset(d, 0, sizeof(float) * hidden);
            if (da_bf16)
                memset(da_bf16 + b * hidden, 0, sizeof(uint16_t) * hidden);
            continue;
        }
        const float *h = h_new + b * hidden, *dy = d_out + b * hidden;
        SPECIALISE(use_relu, relu,
        _Pragma("omp simd")
        for (long j = 0; j < hidden; j++) {
            d[j] = (dy[j] + dhb[j]) * slope(h[j], use_relu);
            dhb[j] = 0.0f;
        }
        )
        if (da_bf16) {
            uint16_t *db = da_bf16 + b * hidden;
            _Pragma("omp simd") for (long j = 0; j < hidden; j++) db[j] = to_bf16(d[j]);
        }
    })
    if (d_bias == NULL)
        return;
    /* Sums over the batch (rows of padded steps are zero): split over units, so that
     * threads never add into the same sum. */
    SPLIT_FOR(SPLIT_STEP(batch, hidden),
    for (long j0 = 0; j0 < hidden; j0 += 64) {
        const long j1 = j0 + 64 < hidden ? j0 + 64 : hidden;
        for (long b = 0; b < batch; b++) {
            const float *d = da + b * hidden;
            _Pragma("omp simd") for (long j = j0; j < j1; j++) d_bias[j] += (double)d[j];
        }
    })
}


/* The loops over time of rnnkit/kernels/rnn_fused.py for float32 under mixed precision with
 * the products on tiles, in C: a step is then a few microseconds shorter than from Python,
 * which is a quarter of it for small rows. The arrays are the Python loop's, whole: (T, B, H)
 * or (T + 1, B, H) for the states, the mask (T, B); w_hh and w_hh_t are w_hh packed for
 * h W_hh^T and for da W_hh; rec is one (B, H) row of scratch. Each thread runs the rows
 * [first, first + count) of the batch (gates.h, tile_threads). */
static void rnn_forward_rows(long steps, long batch, long first, long count, long hidden,
                             int relu, int reverse, float *pre, const uint16_t *w_hh,
                             float *rec, float *h_prev_seq, uint16_t *h_in, const uint8_t *mask,
                             float *out)
{
    const long row = batch * hidden, at = first * hidden; /* step stride, this thread's start */
    float *own = own_scratch(count * hidden, rec + at);
    for (long k = 0; k < steps; k++) {
        const long t = visited(k, steps, reverse);
        const long after = carried_to(k, steps, reverse);
        bf16_tile_product(count, hidden, hidden, h_in + t * row + at, hidden, w_hh, own, hidden);
        rnn_forward(count, hidden, relu, pre + t * row + at, own, NULL, NULL,
                        h_prev_seq + t * row + at, mask ? mask + t * batch + first : NULL,
                        h_prev_seq + after * row + at, out + t * row + at,
                        h_in + after * row + at);
    }
    release_scratch(own, rec + at);
}

void rnn_forward_tiles(long steps, long batch, long hidden, int relu, int reverse, float *pre,
                       const uint16_t *w_hh, float *rec, float *h_prev_seq, uint16_t *h_in,
                       const uint8_t *mask, float *out)
{
    ON_THREAD_ROWS(tile_threads(batch), batch,
        rnn_forward_rows(steps, batch, first, count, hidden, relu, reverse, pre, w_hh, rec,
                         h_prev_seq, h_in, mask, out);
    )
}

/* dh (B, H) holds dL/dh_T on entry and dL/dh_0 on return; d_row is one (B, H) row of float32
 * scratch, d_low receives every step's da in bfloat16 (T, B, H), d_bias the bias sums (H). */
static void rnn_backward_rows(long steps, long batch, long first, long count, long hidden,
                              int relu, int reverse, const float *h_new, const uint8_t *mask,
                              const float *d_out, const uint16_t *w_hh_t, float *rec, float *dh,
                              float *d_row, uint16_t *d_low, double *d_bias)
{
    const long row = batch * hidden, at = first * hidden;
    float *own = own_scratch(count * hidden, rec + at);
    for (long k = 0; k < steps; k++) {
        const long t = visited(steps - 1 - k, steps, reverse);
        rnn_backward(count, hidden, relu, h_new + t * row + at,
                         mask ? mask + t * batch + first : NULL, d_out + t * row + at,
                         k ? own : NULL, NULL, dh + at, d_row + at, d_low + t * row + at,
                         d_bias);
        bf16_tile_product(count, hidden, hidden, d_low + t * row + at, hidden, w_hh_t, own,
                          hidden);
    }
    for (long j = 0; j < count * hidden; j++)
        dh[at + j] += own[j];
    release_scratch(own, rec + at);
}

void rnn_backward_tiles(long steps, long batch, long hidden, int relu, int reverse,
                        const float *h_new, const uint8_t *mask, const float *d_out,
                        const uint16_t *w_hh_t, float *rec, float *dh, float *d_row,
                        uint16_t *d_low, double *d_bias)
{
    int threads = tile_threads(batch);
    double *slices = NULL; /* per thread: (H) of d_bias */
    if (d_bias && threads > 1 && !(slices = calloc(threads * hidden, sizeof(double))))
        threads = 1;
    ON_THREAD_ROWS(threads, batch,
        double *mine = slices ? slices + me * hidden : d_bias;
        rnn_backward_rows(steps, batch, first, count, hidden, relu, reverse, h_new, mask, d_out,
                          w_hh_t, rec, dh, d_row, d_low, mine);
    )
    if (slices) {
        add_slices(d_bias, slices, hidden, hidden, threads);
        free(slices);
    }
}

/* Denormal floats (below 1.2e-38 in float32) cost the CPU a microcode assist per operation,
 * a hundred times a normal one. Gate gradients reach them when a saturated gate's tiny
 * derivative meets a small upstream gradient (the peephole LSTM's cell state drives its gates
 * far into saturation), and from then on every product that reads them crawls: a char-LM
 * step went from 0.13 s to over 1 s. The fused paths therefore run with flush-to-zero and
 * denormals-are-zero set on the calling thread, and put the caller's setting back after. */
#if defined(__x86_64__) || defined(__i386__)
#include <xmmintrin.h>

unsigned int denormals_off(void)
{
    unsigned int old = _mm_getcsr();
    _mm_setcsr(old | 0x8040u); /* FTZ (bit 15) and DAZ (bit 6) */
    return old;
}

void denormals_restore(unsigned int old) { _mm_setcsr(old); }
#else
unsigned int denormals_off(void) { return 0; }
void denormals_restore(unsigned int old) { (void)old; }
#endif
