/* The float32 loops over time of the fused paths with each step's recurrent product in MKL,
 * called from C, for rnnkit/kernels/lstm_fused.py, gru_fused.py and rnn_fused.py (whose Python
 * loops are the twins of these).
 *
 * From Python every step cost a torch call for the product and a ctypes call for the gate
 * math, 10 to 30 us a step of overhead where a step of a (32, 128) LSTM computes in about
 * 60. torch's CPU library carries MKL and exports its packed GEMM (cblas_sgemm_pack and
 * cblas_sgemm_compute, the calls behind torch's own packed linear); Python looks up their
 * addresses once and hands them here (mkl_products_use), so this file links against
 * nothing. W_hh is packed once per sequence, as the B operand of both products: h W_hh^T
 * forward, da W_hh backward (no transposed copy of the weight, where torch's packed linear
 * wanted one). MKL splits each product over its threads; the gate math splits a step over
 * the OpenMP threads from B x H = 8192 on (gates.h), as from Python.
 */
#include "gates.h"

enum { ROW_MAJOR = 101, NO_TRANS = 111, TRANS = 112, PACKED = 151, B_MATRIX = 162 };

typedef size_t (*pack_size_fn)(int identifier, int m, int n, int k);
typedef void (*pack_fn)(int layout, int identifier, int trans, int m, int n, int k, float alpha,
                        const float *src, int ld, float *dest);
typedef void (*compute_fn)(int layout, int trans_a, int trans_b, int m, int n, int k,
                           const float *a, int lda, const float *b, int ldb, float beta,
                           float *c, int ldc);

static pack_size_fn pack_size;
static pack_fn pack;
static compute_fn compute;

/* The addresses of MKL's cblas_sgemm_pack_get_size, cblas_sgemm_pack, cblas_sgemm_compute. */
void mkl_products_use(void *size_function, void *pack_function, void *compute_function)
{
    pack_size = (pack_size_fn)size_function;
    pack = (pack_fn)pack_function;
    compute = (compute_fn)compute_function;
}

/* Bytes of a packed weight for products of (m, k) rows with a (k, n) operand. */
long mkl_packed_bytes(long m, long n, long k) { return (long)pack_size(B_MATRIX, m, n, k); }

/* packed = op(w) for (m, k) @ (k, n): w is stored (n, k) and transposed, or stored (k, n). */
static void pack_weight(long m, long n, long k, int transposed, const float *w, float *packed)
{
    pack(ROW_MAJOR, B_MATRIX, transposed ? TRANS : NO_TRANS, (int)m, (int)n, (int)k, 1.0f, w,
         (int)(transposed ? k : n), packed);
}

/* c (m, n) = a (m, k) @ the packed operand. */
static void product(long m, long n, long k, const float *a, const float *packed, float *c)
{
    compute(ROW_MAJOR, NO_TRANS, PACKED, (int)m, (int)n, (int)k, a, (int)k, packed, (int)n,
            0.0f, c, (int)n);
}

/* The arrays are those of lstm_fused.py's loops, whole: gates (T, B, 4H) W_ih x_t, the bias
 * b_ih + b_hh (4H) or NULL, h and c before each step (T + 1, B, H; row T final), c_t and the
 * output (T, B, H), the mask (T, B) or NULL; w_hh (4H, H); packed mkl_packed_bytes(B, 4H, H)
 * bytes of scratch; rec (B, 4H) scratch. With kept 0 (inference: no backward will read the
 * steps) h and c are two rows (2, B, H) used in turn, the final state in row steps % 2, and
 * c_t one row (B, H) overwritten at every step. */
void lstm_forward_mkl(long steps, long batch, long hidden, int reverse, int kept, float *gates,
                      const float *bias, const float *w_hh, float *packed, float *rec,
                      float *h_prev_seq, float *c_prev_seq, float *c_new_seq, const float *p_i,
                      const float *p_f, const float *p_o, const uint8_t *mask, float *out)
{
    const long row = batch * hidden;
    pack_weight(batch, 4 * hidden, hidden, 1, w_hh, packed);
    for (long k = 0; k < steps; k++) {
        const long t = visited(k, steps, reverse);
        const long before = kept ? t : k % 2, after = kept ? carried_to(k, steps, reverse) : !before;
        product(batch, 4 * hidden, hidden, h_prev_seq + before * row, packed, rec);
        lstm_forward(batch, hidden, gates + 4 * t * row, rec, NULL, bias,
                     h_prev_seq + before * row, c_prev_seq + before * row, p_i, p_f, p_o,
                     mask ? mask + t * batch : NULL, c_new_seq + (kept ? t * row : 0),
                     h_prev_seq + after * row, c_prev_seq + after * row, out + t * row, NULL);
    }
}

/* dh, dc (B, H) hold dL/dh_T, dL/dc_T on entry and dL/dh_0, dL/dc_0 on return; d_gates
 * (T, B, 4H) receives every step's da; packed mkl_packed_bytes(B, H, 4H) bytes of scratch;
 * rec (B, H) scratch; the sums over the batch go into dp_i, dp_f, dp_o (H each) and d_bias
 * (4H), any of them NULL when not wanted. */
void lstm_backward_mkl(long steps, long batch, long hidden, int reverse, const float *gates,
                       const float *c_prev_seq, const float *c_new_seq, const float *p_i,
                       const float *p_f, const float *p_o, const uint8_t *mask,
                       const float *d_out, const float *w_hh, float *packed, float *rec,
                       float *dh, float *dc, float *d_gates, double *dp_i, double *dp_f,
                       double *dp_o, double *d_bias)
{
    const long row = batch * hidden;
    pack_weight(batch, hidden, 4 * hidden, 0, w_hh, packed);
    for (long k = 0; k < steps; k++) {
        const long t = visited(steps - 1 - k, steps, reverse);
        lstm_backward(batch, hidden, gates + 4 * t * row, c_prev_seq + t * row,
                          c_new_seq + t * row, p_i, p_f, p_o, mask ? mask + t * batch : NULL,
                          d_out + t * row, k ? rec : NULL, NULL, dh, dc, d_gates + 4 * t * row,
                          NULL, dp_i, dp_f, dp_o, d_bias);
        product(batch, hidden, 4 * hidden, d_gates + 4 * t * row, packed, rec);
    }
    for (long j = 0; j < row; j++)
        dh[j] += rec[j];
}


/* gru_fused.py's loops: gates (T, B, 3H) W_ih x_t, the bias b_ih + (b_hr, b_hz, 0) (3H) or
 * NULL, h before each step (T + 1, B, H; row T final), W_hn h_{t-1} + b_hn and the output
 * (T, B, H), the mask (T, B) or NULL; w_hh (3H, H); packed mkl_packed_bytes(B, 3H, H) bytes;
 * rec (B, 3H) scratch. */
void gru_forward_mkl(long steps, long batch, long hidden, int reverse, float *gates,
                     const float *bias, const float *w_hh, float *packed, float *rec,
                     const float *b_hn, float *h_prev_seq, const uint8_t *mask, float *h_n_seq,
                     float *out)
{
    const long row = batch * hidden;
    pack_weight(batch, 3 * hidden, hidden, 1, w_hh, packed);
    for (long k = 0; k < steps; k++) {
        const long t = visited(k, steps, reverse);
        const long after = carried_to(k, steps, reverse);
        product(batch, 3 * hidden, hidden, h_prev_seq + t * row, packed, rec);
        gru_forward(batch, hidden, gates + 3 * t * row, rec, NULL, bias, b_hn,
                        h_prev_seq + t * row, mask ? mask + t * batch : NULL, h_n_seq + t * row,
                        h_prev_seq + after * row, out + t * row, NULL);
    }
}

/* dh (B, H) holds dL/dh_T on entry and dL/dh_0 on return; d_ih and d_hh (T, B, 3H) receive
 * every step's gate gradients; packed mkl_packed_bytes(B, H, 3H) bytes; rec (B, H) scratch;
 * the bias sums go into d_bias_ih (3H) and d_bias_hn (H), or nowhere when NULL. */
void gru_backward_mkl(long steps, long batch, long hidden, int reverse, const float *gates,
                      const float *h_n_seq, const float *h_prev_seq, const uint8_t *mask,
                      const float *d_out, const float *w_hh, float *packed, float *rec,
                      float *dh, float *d_ih, float *d_hh, double *d_bias_ih, double *d_bias_hn)
{
    const long row = batch * hidden;
    pack_weight(batch, hidden, 3 * hidden, 0, w_hh, packed);
    for (long k = 0; k < steps; k++) {
        const long t = visited(steps - 1 - k, steps, reverse);
        gru_backward(batch, hidden, gates + 3 * t * row, h_n_seq + t * row,
                         h_prev_seq + t * row, mask ? mask + t * batch : NULL, d_out + t * row,
                         k ? rec : NULL, NULL, dh, d_ih + 3 * t * row, d_hh + 3 * t * row, NULL,
                         NULL, d_bias_ih, d_bias_hn);
        product(batch, hidden, 3 * hidden, d_hh + 3 * t * row, packed, rec);
    }
    for (long j = 0; j < row; j++)
        dh[j] += rec[j];
}


/* rnn_fused.py's loops: pre (T, B, H) W_ih x_t on entry and h_t = f(a_t) on return, the bias
 * b_ih + b_hh (H) or NULL, h before each step (T + 1, B, H; row T final), the output (T, B,
 * H), the mask (T, B) or NULL; w_hh (H, H); packed mkl_packed_bytes(B, H, H) bytes; rec (B, H)
 * scratch. relu: 1 for relu. */
void rnn_forward_mkl(long steps, long batch, long hidden, int relu, int reverse, float *pre,
                     const float *bias, const float *w_hh, float *packed, float *rec,
                     float *h_prev_seq, const uint8_t *mask, float *out)
{
    const long row = batch * hidden;
    pack_weight(batch, hidden, hidden, 1, w_hh, packed);
    for (long k = 0; k < steps; k++) {
        const long t = visited(k, steps, reverse);
        const long after = carried_to(k, steps, reverse);
        product(batch, hidden, hidden, h_prev_seq + t * row, packed, rec);
        rnn_forward(batch, hidden, relu, pre + t * row, rec, NULL, bias, h_prev_seq + t * row,
                        mask ? mask + t * batch : NULL, h_prev_seq + after * row, out + t * row,
                        NULL);
    }
}

/* dh (B, H) holds dL/dh_T on entry and dL/dh_0 on return; d_pre (T, B, H) receives every
 * step's da; packed mkl_packed_bytes(B, H, H) bytes; rec (B, H) scratch; d_bias (H) the bias
 * sums, or NULL. */
void rnn_backward_mkl(long steps, long batch, long hidden, int relu, int reverse,
                      const float *h_new, const uint8_t *mask, const float *d_out,
                      const float *w_hh, float *packed, float *rec, float *dh, float *d_pre,
                      double *d_bias)
{
    const long row = batch * hidden;
    pack_weight(batch, hidden, hidden, 0, w_hh, packed);
    for (long k = 0; k < steps; k++) {
        const long t = visited(steps - 1 - k, steps, reverse);
        rnn_backward(batch, hidden, relu, h_new + t * row, mask ? mask + t * batch : NULL,
                         d_out + t * row, k ? rec : NULL, NULL, dh, d_pre + t * row, NULL,
                         d_bias);
        product(batch, hidden, hidden, d_pre + t * row, packed, rec);
    }
    for (long j = 0; j < row; j++)
        dh[j] += rec[j];
}
