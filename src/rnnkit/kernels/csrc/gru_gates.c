/* The element-wise gate math of one GRU step, forward and backward, fused into one pass over
 * the batch. The recurrent matrix products stay in torch; this file does everything between
 * two of them. The equations and their gradients are those of rnnkit/kernels/gru_bptt.py
 * (its docstring), the Python twin of this file; torch.nn.GRU's form, with the reset gate
 * applied to W_hn h_{t-1} + b_hn, which is why the recurrent product arrives separately from
 * the input projection instead of summed into it.
 *
 * Layout: gate rows (B, 3H) in torch.nn's block order r, z, n; states (B, H); the mask is one
 * byte per sequence (1 at a real step) or NULL when every step is real. Everything is
 * contiguous; optional arrays are NULL when absent. bfloat16 arrays hold the top 16 bits of a
 * float32. The numeric helpers are in gates.h.
 */
#include "gates.h"

/* Forward. gates holds (x_r, x_z, x_n) = W_ih x_t + b_ih plus (b_hr, b_hz, 0) on entry (or
 * W_ih x_t, with those biases in bias: (3H,) or NULL), rec (or rec_bf16) W_hh h_{t-1} (no
 * bias); b_hn is (H,) or NULL. On return gates holds the activations (r, z, n) and h_n
 * the row W_hn h_{t-1} + b_hn; h_next the carried state (the old one at a padded step),
 * h_next_bf16 its bfloat16 copy; out the output (zero at a padded step).
 */
void gru_forward(long batch, long hidden, float *gates, const float *rec, const uint16_t *rec_bf16,
                 const float *bias, const float *b_hn, const float *h_prev, const uint8_t *mask,
                 float *h_n, float *h_next, float *out, uint16_t *h_next_bf16)
{
    SPLIT_FOR(SPLIT_STEP(batch, hidden),
    for (long b = 0; b < batch; b++) {
        float *a = gates + b * 3 * hidden, *hn = h_n + b * hidden;
        const float *rb = rec ? rec + b * 3 * hidden : NULL;
        const uint16_t *rb16 = rec_bf16 ? rec_bf16 + b * 3 * hidden : NULL;
        const float *hp = h_prev + b * hidden;
        float *hx = h_next + b * hidden, *y = out + b * hidden;
        const int real_step = mask == NULL || mask[b];
        ADD_BIAS(a, bias, 3 * hidden)
        SPECIALISE(low, rb == NULL,
        SPECIALISE(bias_n, b_hn != NULL,
        _Pragma("omp simd")
        for (long j = 0; j < hidden; j++) {
            float r = sigmoid_f32(a[j] + PRODUCT_AT(low, rb, rb16, j));
            float z = sigmoid_f32(a[hidden + j] +
                                      PRODUCT_AT(low, rb, rb16, hidden + j));
            float recurrent_n = PRODUCT_AT(low, rb, rb16, 2 * hidden + j);
            if (bias_n)
                recurrent_n += b_hn[j];
            float n = tanh_f32(a[2 * hidden + j] + r * recurrent_n);
            float h = (1.0f - z) * n + z * hp[j];
            a[j] = r;
            a[hidden + j] = z;
            a[2 * hidden + j] = n;
            hn[j] = recurrent_n;
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
 * carried state after the step (rec: the previous step's d_hh W_hh, absent at the first),
 * d_out the output's. Writes d_ih = dL/d(W_ih x_t + b_ih) = (da_r, da_z, da_n) and d_hh =
 * dL/d(W_hh h_{t-1} + b_hh) = (da_r, da_z, r da_n), both zero at padded steps, and their
 * bfloat16 copies; replaces dh by the part of dL/dh_{t-1} that skips W_hh (dh_t z at a real
 * step, all of it at a padded one; the caller adds d_hh W_hh next). Adds the bias gradients
 * into d_bias_ih (double, 3H) and d_bias_hn (double, H): b_hh's is (d_bias_ih[:2H], d_bias_hn).
 */
void gru_backward(long batch, long hidden, const float *gates, const float *h_n,
                  const float *h_prev, const uint8_t *mask, const float *d_out, const float *rec,
                  const uint16_t *rec_bf16, float *dh, float *d_ih, float *d_hh,
                  uint16_t *d_ih_bf16, uint16_t *d_hh_bf16, double *d_bias_ih, double *d_bias_hn)
{
    SPLIT_FOR(SPLIT_STEP(batch, hidden),
    for (long b = 0; b < batch; b++) {
        float *di = d_ih + b * 3 * hidden, *dr = d_hh + b * 3 * hidden;
        float *dhb = dh + b * hidden;
        const float *rb = rec ? rec + b * hidden : NULL;
        const uint16_t *rb16 = rec_bf16 ? rec_bf16 + b * hidden : NULL;
        if (rb || rb16) {
            SPECIALISE(low, rb == NULL,
            _Pragma("omp simd")
            for (long j = 0; j < hidden; j++) dhb[j] += PRODUCT_AT(low, rb, rb16, j);
            )
        }
        if (mask != NULL && !mask[b]) {
            memset(di, 0, sizeof(float) * 3 * hidden);
            memset(dr, 0, sizeof(float) * 3 * hidden);
            if (d_ih_bf16) {
                memset(d_ih_bf16 + b * 3 * hidden, 0, sizeof(uint16_t) * 3 * hidden);
                memset(d_hh_bf16 + b * 3 * hidden, 0, sizeof(uint16_t) * 3 * hidden);
            }
            continue;
        }
        const float *a = gates + b * 3 * hidden, *hn = h_n + b * hidden;
        const float *hp = h_prev + b * hidden, *dy = d_out + b * hidden;
        _Pragma("omp simd")
        for (long j = 0; j < hidden; j++) {
            float r = a[j], z = a[hidden + j], n = a[2 * hidden + j];
            float dh_new = dy[j] + dhb[j];
            float da_n = dh_new * (1.0f - z) * (1.0f - n * n);
            float da_z = dh_new * (hp[j] - n) * z * (1.0f - z);
            float da_r = da_n * hn[j] * r * (1.0f - r);
            di[j] = dr[j] = da_r;
            di[hidden + j] = dr[hidden + j] = da_z;
            di[2 * hidden + j] = da_n;
            dr[2 * hidden + j] = r * da_n;
            dhb[j] = dh_new * z;
        }
        if (d_ih_bf16) {
            uint16_t *ib = d_ih_bf16 + b * 3 * hidden, *hb = d_hh_bf16 + b * 3 * hidden;
            _Pragma("omp simd")
            for (long k = 0; k < 3 * hidden; k++) {
                ib[k] = to_bf16(di[k]);
                hb[k] = to_bf16(dr[k]);
            }
        }
    })
    if (d_bias_ih == NULL)
        return;
    /* Bias sums over the batch (rows of padded steps are zero): split over units, so that
     * threads never add into the same sum. */
    SPLIT_FOR(SPLIT_STEP(batch, hidden),
    for (long k0 = 0; k0 < 3 * hidden; k0 += 64) {
        const long k1 = k0 + 64 < 3 * hidden ? k0 + 64 : 3 * hidden;
        for (long b = 0; b < batch; b++) {
            const float *di = d_ih + b * 3 * hidden, *dr = d_hh + b * 3 * hidden;
            _Pragma("omp simd") for (long k = k0; k < k1; k++) d_bias_ih[k] += (double)di[k];
            for (long k = k0 > 2 * hidden ? k0 : 2 * hidden; k < k1; k++)
                d_bias_hn[k - 2 * hidden] += (double)dr[k];
        }
    })
}


/* The loops over time of rnnkit/kernels/gru_fused.py for float32 under mixed precision with
 * the products on tiles, in C, as rnn_gates.c has them for the Elman RNN. The arrays are the
 * Python loop's, whole: (T, B, 3H) for the gates and their gradients, (T, B, H) or
 * (T + 1, B, H) for the states, the mask (T, B); w_hh and w_hh_t are W_hh packed for
 * h W_hh^T and for d_hh W_hh; rec is one row of scratch, (B, 3H) forward and (B, H) back.
 * Each thread runs the rows [first, first + count) of the batch (gates.h, tile_threads). */
static void gru_forward_rows(long steps, long batch, long first, long count, long hidden,
                             int reverse, float *gates, const uint16_t *w_hh, float *rec,
                             const float *b_hn, float *h_prev_seq, uint16_t *h_in,
                             const uint8_t *mask, float *h_n_seq, float *out)
{
    const long row = batch * hidden, at = first * hidden; /* step stride, this thread's start */
    float *own = own_scratch(count * 3 * hidden, rec + 3 * at);
    for (long k = 0; k < steps; k++) {
        const long t = visited(k, steps, reverse);
        const long after = carried_to(k, steps, reverse);
        bf16_tile_product(count, 3 * hidden, hidden, h_in + t * row + at, hidden, w_hh, own,
                          3 * hidden);
        gru_forward(count, hidden, gates + 3 * (t * row + at), own, NULL, NULL, b_hn,
                        h_prev_seq + t * row + at, mask ? mask + t * batch + first : NULL,
                        h_n_seq + t * row + at, h_prev_seq + after * row + at,
                        out + t * row + at, h_in + after * row + at);
    }
    release_scratch(own, rec + 3 * at);
}

void gru_forward_tiles(long steps, long batch, long hidden, int reverse, float *gates,
                       const uint16_t *w_hh, float *rec, const float *b_hn, float *h_prev_seq,
                       uint16_t *h_in, const uint8_t *mask, float *h_n_seq, float *out)
{
    ON_THREAD_ROWS(tile_threads(batch), batch,
        gru_forward_rows(steps, batch, first, count, hidden, reverse, gates, w_hh, rec, b_hn,
                         h_prev_seq, h_in, mask, h_n_seq, out);
    )
}

/* dh (B, H) holds dL/dh_T on entry and dL/dh_0 on return; d_ih_row and d_hh_row are one
 * (B, 3H) row of float32 scratch each, d_ih_low and d_hh_low receive every step's gate
 * gradients in bfloat16 (T, B, 3H); the bias sums go into d_bias_ih (3H) and d_bias_hn (H). */
static void gru_backward_rows(long steps, long batch, long first, long count, long hidden,
                              int reverse, const float *gates, const float *h_n_seq,
                              const float *h_prev_seq, const uint8_t *mask, const float *d_out,
                              const uint16_t *w_hh_t, float *rec, float *dh, float *d_ih_row,
                              float *d_hh_row, uint16_t *d_ih_low, uint16_t *d_hh_low,
                              double *d_bias_ih, double *d_bias_hn)
{
    const long row = batch * hidden, at = first * hidden;
    float *own = own_scratch(count * hidden, rec + at);
    for (long k = 0; k < steps; k++) {
        const long t = visited(steps - 1 - k, steps, reverse);
        gru_backward(count, hidden, gates + 3 * (t * row + at), h_n_seq + t * row + at,
                         h_prev_seq + t * row + at, mask ? mask + t * batch + first : NULL,
                         d_out + t * row + at, k ? own : NULL, NULL, dh + at,
                         d_ih_row + 3 * at, d_hh_row + 3 * at, d_ih_low + 3 * (t * row + at),
                         d_hh_low + 3 * (t * row + at), d_bias_ih, d_bias_hn);
        bf16_tile_product(count, hidden, 3 * hidden, d_hh_low + 3 * (t * row + at), 3 * hidden,
                          w_hh_t, own, hidden);
    }
    for (long j = 0; j < count * hidden; j++)
        dh[at + j] += own[j];
    release_scratch(own, rec + at);
}

void gru_backward_tiles(long steps, long batch, long hidden, int reverse, const float *gates,
                        const float *h_n_seq, const float *h_prev_seq, const uint8_t *mask,
                        const float *d_out, const uint16_t *w_hh_t, float *rec, float *dh,
                        float *d_ih_row, float *d_hh_row, uint16_t *d_ih_low,
                        uint16_t *d_hh_low, double *d_bias_ih, double *d_bias_hn)
{
    int threads = tile_threads(batch);
    double *slices = NULL; /* per thread: (3H) of d_bias_ih, then (H) of d_bias_hn */
    if (d_bias_ih && threads > 1 && !(slices = calloc(threads * 4 * hidden, sizeof(double))))
        threads = 1;
    ON_THREAD_ROWS(threads, batch,
        double *mine = slices ? slices + me * 4 * hidden : NULL;
        gru_backward_rows(steps, batch, first, count, hidden, reverse, gates, h_n_seq,
                          h_prev_seq, mask, d_out, w_hh_t, rec, dh, d_ih_row, d_hh_row,
                          d_ih_low, d_hh_low, mine ? mine : d_bias_ih,
                          mine ? mine + 3 * hidden : d_bias_hn);
    )
    if (slices) {
        add_slices(d_bias_ih, slices, 3 * hidden, 4 * hidden, threads);
        add_slices(d_bias_hn, slices + 3 * hidden, hidden, 4 * hidden, threads);
        free(slices);
    }
}
