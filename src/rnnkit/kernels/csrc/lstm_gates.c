/* The element-wise gate math of one LSTM step (with or without peepholes), forward and
 * backward, fused into one pass over the batch. The recurrent matrix products stay in torch;
 * this file does everything between two of them. The equations and their gradients are
 * those of rnnkit/kernels/lstm_bptt.py (its docstring), the Python twin of this file.
 *
 * Layout: gates (B, 4H) in torch.nn's block order i, f, g, o; states (B, H); the mask is one
 * byte per sequence (1 at a real step) or NULL when every step is real; the peephole weights
 * p_i, p_f, p_o are (H,) or NULL for the standard LSTM. Everything is contiguous. Optional
 * arrays are NULL when absent. bfloat16 arrays hold the top 16 bits of a float32.
 * The numeric helpers are in gates.h.
 */
#include "gates.h"

/* row += rec (float32) or row += rec_bf16, over n numbers, and += bias where not NULL (in
 * the same pass as rec where both are given). */
#define ADD_PRODUCT(row, rec, rec_bf16, bias, n)                                        \
    if ((rec) && (bias)) {                                                                    \
        _Pragma("omp simd") for (long k = 0; k < (n); k++)(row)[k] += (rec)[k] + (bias)[k];   \
    } else {                                                                                  \
        ADD_BIAS(row, bias, n)                                                                \
        if (rec) {                                                                            \
            _Pragma("omp simd") for (long k = 0; k < (n); k++)(row)[k] += (rec)[k];           \
        } else if (rec_bf16) {                                                                \
            _Pragma("omp simd") for (long k = 0; k < (n); k++)                                \
                (row)[k] += from_bf16((rec_bf16)[k]);                                   \
        }                                                                                     \
    }

/* Forward. gates holds W_ih x_t + b on entry (or W_ih x_t, with b in bias: (4H,) or NULL),
 * rec (or rec_bf16) W_hh h_{t-1}; on return gates holds the activations (i, f, g, o).
 * c_new receives c_t before masking; h_next, c_next the carried state (the old one at a
 * padded step), h_next_bf16 a bfloat16 copy of h_next; out the output row (zero at a
 * padded step).
 */
void lstm_forward(long batch, long hidden, float *gates, const float *rec, const uint16_t *rec_bf16,
                  const float *bias, const float *h_prev, const float *c_prev, const float *p_i,
                  const float *p_f, const float *p_o, const uint8_t *mask, float *c_new,
                  float *h_next, float *c_next, float *out, uint16_t *h_next_bf16)
{
    SPLIT_FOR(SPLIT_STEP(batch, hidden),
    for (long b = 0; b < batch; b++) {
        float *a = gates + b * 4 * hidden;
        const float *cp = c_prev + b * hidden, *hp = h_prev + b * hidden;
        float *cn = c_new + b * hidden, *hn = h_next + b * hidden;
        float *cx = c_next + b * hidden, *y = out + b * hidden;
        const int real_step = mask == NULL || mask[b];
        ADD_PRODUCT(a, rec ? rec + b * 4 * hidden : NULL,
                    rec_bf16 ? rec_bf16 + b * 4 * hidden : NULL, bias, 4 * hidden)
        SPECIALISE(peephole, p_i != NULL,
        _Pragma("omp simd")
        for (long j = 0; j < hidden; j++) {
            float ai = a[j], af = a[hidden + j], ag = a[2 * hidden + j];
            float ao = a[3 * hidden + j], c = cp[j];
            if (peephole) {
                ai += p_i[j] * c;
                af += p_f[j] * c;
            }
            float i = sigmoid_f32(ai), f = sigmoid_f32(af), g = tanh_f32(ag);
            float cell = f * c + i * g;
            if (peephole)
                ao += p_o[j] * cell;
            float o = sigmoid_f32(ao);
            float h = o * tanh_f32(cell);
            a[j] = i;
            a[hidden + j] = f;
            a[2 * hidden + j] = g;
            a[3 * hidden + j] = o;
            cn[j] = cell;
            hn[j] = real_step ? h : hp[j];
            cx[j] = real_step ? cell : c;
            y[j] = real_step ? h : 0.0f;
        }
        )
        if (h_next_bf16) {
            uint16_t *hb = h_next_bf16 + b * hidden;
            _Pragma("omp simd") for (long j = 0; j < hidden; j++) hb[j] = to_bf16(hn[j]);
        }
    })
}

/* Backward through one step. On entry dh + rec (or rec_bf16) and dc are the gradients
 * reaching the carried state after the step (rec: the previous step's d_gates W_hh), d_out
 * the output's. Writes d_gates (dL/da, B x 4H, zero at padded steps) and its bfloat16 copy,
 * replaces dc by the gradient for c_{t-1} and dh by its carried part (zero at real steps:
 * the caller adds this step's d_gates W_hh next). Adds the peephole gradients into dp_*
 * (double, H) and the bias gradient into d_bias (double, 4H).
 */
void lstm_backward(long batch, long hidden, const float *gates, const float *c_prev,
                   const float *c_new, const float *p_i, const float *p_f, const float *p_o,
                   const uint8_t *mask, const float *d_out, const float *rec,
                   const uint16_t *rec_bf16, float *dh, float *dc, float *d_gates,
                   uint16_t *d_gates_bf16, double *dp_i, double *dp_f, double *dp_o, double *d_bias)
{
    SPLIT_FOR(SPLIT_STEP(batch, hidden),
    for (long b = 0; b < batch; b++) {
        float *da = d_gates + b * 4 * hidden;
        float *dhb = dh + b * hidden, *dcb = dc + b * hidden;
        ADD_PRODUCT(dhb, rec ? rec + b * hidden : NULL,
                    rec_bf16 ? rec_bf16 + b * hidden : NULL, (const float *)NULL, hidden)
        if (mask != NULL && !mask[b]) {
            memset(da, 0, sizeof(float) * 4 * hidden);
            if (d_gates_bf16)
                memset(d_gates_bf16 + b * 4 * hidden, 0, sizeof(uint16_t) * 4 * hidden);
            continue;
        }
        const float *a = gates + b * 4 * hidden, *cp = c_prev + b * hidden;
        const float *cn = c_new + b * hidden, *dy = d_out + b * hidden;
        SPECIALISE(peephole, p_i != NULL,
        _Pragma("omp simd")
        for (long j = 0; j < hidden; j++) {
            float i = a[j], f = a[hidden + j], g = a[2 * hidden + j], o = a[3 * hidden + j];
            float tc = tanh_f32(cn[j]);
            float dh_new = dy[j] + dhb[j];
            float da_o = dh_new * tc * o * (1.0f - o);
            float dc_new = dcb[j] + dh_new * o * (1.0f - tc * tc);
            if (peephole)
                dc_new += p_o[j] * da_o;
            float da_i = dc_new * g * i * (1.0f - i);
            float da_f = dc_new * cp[j] * f * (1.0f - f);
            float da_g = dc_new * i * (1.0f - g * g);
            float dc_prev = dc_new * f;
            if (peephole) {
                dc_prev += p_i[j] * da_i + p_f[j] * da_f;
            }
            da[j] = da_i;
            da[hidden + j] = da_f;
            da[2 * hidden + j] = da_g;
            da[3 * hidden + j] = da_o;
            dcb[j] = dc_prev;
            dhb[j] = 0.0f;
        }
        )
        if (d_gates_bf16) {
            uint16_t *db = d_gates_bf16 + b * 4 * hidden;
            _Pragma("omp simd") for (long k = 0; k < 4 * hidden; k++) db[k] = to_bf16(da[k]);
        }
    })
    if (d_bias) {
        SPLIT_FOR(SPLIT_STEP(batch, hidden),
        for (long k0 = 0; k0 < 4 * hidden; k0 += 64) {
            const long k1 = k0 + 64 < 4 * hidden ? k0 + 64 : 4 * hidden;
            for (long b = 0; b < batch; b++) {
                const float *da = d_gates + b * 4 * hidden;
                _Pragma("omp simd") for (long k = k0; k < k1; k++) d_bias[k] += (double)da[k];
            }
        })
    }
    if (p_i == NULL)
        return;
    /* Peephole sums over the batch (rows of padded steps are zero): split over units, so
     * that threads never add into the same sum. */
    SPLIT_FOR(SPLIT_STEP(batch, hidden),
    for (long j0 = 0; j0 < hidden; j0 += 64) {
        const long j1 = j0 + 64 < hidden ? j0 + 64 : hidden;
        for (long b = 0; b < batch; b++) {
            const float *da = d_gates + b * 4 * hidden;
            const float *cp = c_prev + b * hidden, *cn = c_new + b * hidden;
            _Pragma("omp simd")
            for (long j = j0; j < j1; j++) {
                dp_i[j] += (double)(da[j] * cp[j]);
                dp_f[j] += (double)(da[hidden + j] * cp[j]);
                dp_o[j] += (double)(da[3 * hidden + j] * cn[j]);
            }
        }
    })
}


/* The loops over time of rnnkit/kernels/lstm_fused.py for float32 under mixed precision with
 * the products on tiles, in C, as gru_gates.c has them for the GRU. The arrays are the Python
 * loop's, whole: (T, B, 4H) for the gates, (T + 1, B, H) for h and c before each step (row T
 * final), (T, B, H) for c_t and the output, the mask (T, B); w_hh is W_hh packed for
 * h W_hh^T; rec is one (B, 4H) row of scratch. p_i, p_f, p_o are NULL without peepholes.
 * Each thread runs the rows [first, first + count) of the batch (gates.h, tile_threads). */
static void lstm_forward_rows(long steps, long batch, long first, long count, long hidden,
                              int reverse, float *gates, const uint16_t *w_hh, float *rec,
                              float *h_prev_seq, uint16_t *h_in, float *c_prev_seq,
                              float *c_new_seq, const float *p_i, const float *p_f,
                              const float *p_o, const uint8_t *mask, float *out)
{
    const long row = batch * hidden, at = first * hidden; /* step stride, this thread's start */
    float *own = own_scratch(count * 4 * hidden, rec + 4 * at);
    for (long k = 0; k < steps; k++) {
        const long t = visited(k, steps, reverse);
        const long after = carried_to(k, steps, reverse);
        bf16_tile_product(count, 4 * hidden, hidden, h_in + t * row + at, hidden, w_hh, own,
                          4 * hidden);
        lstm_forward(count, hidden, gates + 4 * (t * row + at), own, NULL, NULL,
                         h_prev_seq + t * row + at, c_prev_seq + t * row + at, p_i, p_f, p_o,
                         mask ? mask + t * batch + first : NULL, c_new_seq + t * row + at,
                         h_prev_seq + after * row + at, c_prev_seq + after * row + at,
                         out + t * row + at, h_in + after * row + at);
    }
    release_scratch(own, rec + 4 * at);
}

void lstm_forward_tiles(long steps, long batch, long hidden, int reverse, float *gates,
                        const uint16_t *w_hh, float *rec, float *h_prev_seq, uint16_t *h_in,
                        float *c_prev_seq, float *c_new_seq, const float *p_i, const float *p_f,
                        const float *p_o, const uint8_t *mask, float *out)
{
    ON_THREAD_ROWS(tile_threads(batch), batch,
        lstm_forward_rows(steps, batch, first, count, hidden, reverse, gates, w_hh, rec,
                          h_prev_seq, h_in, c_prev_seq, c_new_seq, p_i, p_f, p_o, mask, out);
    )
}

/* dh, dc (B, H) hold dL/dh_T, dL/dc_T on entry and dL/dh_0, dL/dc_0 on return; w_hh_t is W_hh
 * packed for da W_hh, rec one (B, H) row of scratch, d_row one (B, 4H) row of float32
 * scratch; d_low receives every step's da in bfloat16 (T, B, 4H); the sums over the batch go
 * into dp_i, dp_f, dp_o (H each) and d_bias (4H), any of them NULL when not wanted. */
static void lstm_backward_rows(long steps, long batch, long first, long count, long hidden,
                               int reverse, const float *gates, const float *c_prev_seq,
                               const float *c_new_seq, const float *p_i, const float *p_f,
                               const float *p_o, const uint8_t *mask, const float *d_out,
                               const uint16_t *w_hh_t, float *rec, float *dh, float *dc,
                               float *d_row, uint16_t *d_low, double *dp_i, double *dp_f,
                               double *dp_o, double *d_bias)
{
    const long row = batch * hidden, at = first * hidden;
    float *own = own_scratch(count * hidden, rec + at);
    for (long k = 0; k < steps; k++) {
        const long t = visited(steps - 1 - k, steps, reverse);
        lstm_backward(count, hidden, gates + 4 * (t * row + at), c_prev_seq + t * row + at,
                          c_new_seq + t * row + at, p_i, p_f, p_o,
                          mask ? mask + t * batch + first : NULL, d_out + t * row + at,
                          k ? own : NULL, NULL, dh + at, dc + at, d_row + 4 * at,
                          d_low + 4 * (t * row + at), dp_i, dp_f, dp_o, d_bias);
        bf16_tile_product(count, hidden, 4 * hidden, d_low + 4 * (t * row + at), 4 * hidden,
                          w_hh_t, own, hidden);
    }
    for (long j = 0; j < count * hidden; j++)
        dh[at + j] += own[j];
    release_scratch(own, rec + at);
}

void lstm_backward_tiles(long steps, long batch, long hidden, int reverse, const float *gates,
                         const float *c_prev_seq, const float *c_new_seq, const float *p_i,
                         const float *p_f, const float *p_o, const uint8_t *mask,
                         const float *d_out, const uint16_t *w_hh_t, float *rec, float *dh,
                         float *dc, float *d_row, uint16_t *d_low, double *dp_i, double *dp_f,
                         double *dp_o, double *d_bias)
{
    int threads = tile_threads(batch);
    const long width = 7 * hidden; /* per thread: d_bias (4H), then dp_i, dp_f, dp_o (H each) */
    double *slices = NULL;
    if ((d_bias || dp_i) && threads > 1 && !(slices = calloc(threads * width, sizeof(double))))
        threads = 1;
    ON_THREAD_ROWS(threads, batch,
        double *mine = slices ? slices + me * width : NULL;
        lstm_backward_rows(steps, batch, first, count, hidden, reverse, gates, c_prev_seq,
                           c_new_seq, p_i, p_f, p_o, mask, d_out, w_hh_t, rec, dh, dc, d_row,
                           d_low, dp_i && mine ? mine + 4 * hidden : dp_i,
                           dp_f && mine ? mine + 5 * hidden : dp_f,
                           dp_o && mine ? mine + 6 * hidden : dp_o,
                           d_bias && mine ? mine : d_bias);
    )
    if (slices) {
        if (d_bias)
            add_slices(d_bias, slices, 4 * hidden, width, threads);
        if (dp_i) {
            add_slices(dp_i, slices + 4 * hidden, hidden, width, threads);
            add_slices(dp_f, slices + 5 * hidden, hidden, width, threads);
            add_slices(dp_o, slices + 6 * hidden, hidden, width, threads);
        }
        free(slices);
    }
}
