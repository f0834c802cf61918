/* One time step of a whole stack of recurrent layers, for rnnkit.Stream.
 *
 * Built at first use by rnnkit/kernels/step_c.py (gcc -O3 -march=native, or -O3 alone)
 * and called through ctypes with one pointer to a `Stack` prepared in Python. Its slow
 * twin is the torch path of rnnkit.Stream, which steps the cells of rnnkit/cells.py;
 * tests/test_stream.py compares the two and both against the full-sequence layer.
 *
 * Why it is fast at batch 1: one call runs every layer and the head, with no allocation;
 * each weight matrix is stored as column panels of PANEL outputs, so a matrix-vector
 * product reads the weights once, front to back, and keeps PANEL accumulators in
 * vector registers (no horizontal sums); the gate nonlinearities use a polynomial exp
 * that the compiler vectorises.
 *
 * The equations are those of rnnkit/cells.py, with torch.nn's gate orders:
 *   RNN:  h = f(gx + gh)                                 f = tanh or relu
 *   LSTM: (i, f, g, o) blocks; i += p_i c_prev, f += p_f c_prev (peephole, else p = 0)
 *         c = sig(f) c_prev + sig(i) tanh(g);  o += p_o c;  h = sig(o) tanh(c)
 *   GRU:  (r, z, n) blocks; r = sig(gx_r + gh_r), z = sig(gx_z + gh_z),
 *         n = tanh(gx_n + r gh_n), h = (1 - z) n + z h_prev
 * where gx = W_ih x + b_ih (or a row of the table of input projections, which already
 * holds it; for a vocabulary too large for that table, x is the token's embedding row)
 * and gh = W_hh h_prev + b_hh.
 *
 * Shape letters: B batch, I input size, H hidden size, G gate blocks, N = G*H rounded up
 * to a multiple of PANEL, V vocabulary (table rows), O head outputs.
 */
#include <stddef.h>
#include <stdint.h>

#include "gates.h" /* exp_f32, sigmoid_f32, tanh_f32; rnnkit.h */

#define PANEL 64

enum { RNN_TANH = 0, RNN_RELU = 1, LSTM = 2, GRU = 3 };

typedef struct Stack {
    int32_t kind, layers, batch, input_size;
    int32_t hidden, gate_rows, head_size, padding;
    int64_t vocab;               /* embedding rows; 0 without an embedding */
    const float *table;          /* (V, G*H): embedding through layer 0's W_ih, plus b_ih */
    const float *embedding;      /* (V, I): used when there is no table */
    const float *const *w_ih;    /* per layer, panels of W_ih (layer 0 unused with a table) */
    const float *const *w_hh;    /* per layer, panels of W_hh */
    const float *const *b_ih;    /* per layer, (N) */
    const float *const *b_hh;    /* per layer, (N) */
    const float *const *peep;    /* per layer, (3H) p_i, p_f, p_o; zeros without peepholes */
    const float *head_w;         /* panels of the head's weight, or NULL */
    const float *head_b;         /* (O rounded up to PANEL) */
    float *h;                    /* (L, B, H) */
    float *c;                    /* (L, B, H), LSTM only */
    float *gx, *gh;              /* scratch, (B, N) each */
    float *out;                  /* (B, O rounded up to PANEL) */
    const int64_t *tokens;       /* (B,) */
} Stack;

/* Steps that read at least this many weights (1.5 MB in float32, every matrix of the stack
 * together) split each matrix's panels over the OpenMP threads: reading the weights is the
 * whole cost of a step at batch 1, a core's L2 cache holds 2 MB, and two cores hold what
 * one cannot. A hidden-256 LSTM fed vectors (W_ih and W_hh, 2 MB) took 57 us a step on one
 * core, 20 us on two; by token (W_hh alone, 1 MB) it stays on one thread, where waking the
 * other costs more than it saves (about 12 us a step). Built with -fopenmp, the library
 * shares torch's OpenMP runtime, so it follows torch.set_num_threads. */
#define PARALLEL_WEIGHTS (3L << 17)

/* Panel p of y = W v + b for W (rows, K) stored as panels: panel p is a (K, PANEL) block
 * whose column j is row p * PANEL + j of W (zero past the last row). y and b hold whole
 * panels. */
static inline void matvec_panel(const float *restrict w, const float *restrict v, int K,
                                const float *restrict b, float *restrict y, int p) {
    const float *restrict wp = w + (size_t)p * K * PANEL;
    float acc[PANEL];
    for (int j = 0; j < PANEL; j++) acc[j] = b[p * PANEL + j];
    for (int k = 0; k < K; k++) {
        float vk = v[k];
        for (int j = 0; j < PANEL; j++) acc[j] += vk * wp[(size_t)k * PANEL + j];
    }
    for (int j = 0; j < PANEL; j++) y[p * PANEL + j] = acc[j];
}

/* y = W v + b, its panels shared among the OpenMP threads where `split` holds; else not
 * entering the OpenMP runtime at all (an `omp parallel for if (0)` costs about 0.8 us a
 * call here, a tenth of a hidden-256 LSTM's step). */
static void matvec(const float *restrict w, const float *restrict v, int K, int rows,
                   const float *restrict b, float *restrict y, int split) {
    int panels = (rows + PANEL - 1) / PANEL;
    if (split) {
#pragma omp parallel for schedule(static)
        for (int p = 0; p < panels; p++) matvec_panel(w, v, K, b, y, p);
    } else {
        for (int p = 0; p < panels; p++) matvec_panel(w, v, K, b, y, p);
    }
}

/* How many threads a step that reads this many weights splits its matrices over (tests). */
int rnnkit_matvec_threads(long weights) {
#ifdef _OPENMP
    return weights >= PARALLEL_WEIGHTS ? omp_get_max_threads() : 1;
#else
    (void)weights;
    return 1;
#endif
}

static void rnn_update(const float *restrict gx, const float *restrict gh, float *restrict h,
                       int H, int relu) {
    for (int j = 0; j < H; j++) {
        float pre = gx[j] + gh[j];
        h[j] = relu ? (pre > 0.0f ? pre : 0.0f) : tanh_f32(pre);
    }
}

static void lstm_update(const float *restrict gx, const float *restrict gh,
                        const float *restrict peep, float *restrict h, float *restrict c, int H) {
    const float *p_i = peep, *p_f = peep + H, *p_o = peep + 2 * H;
    for (int j = 0; j < H; j++) {
        float c_prev = c[j];
        float input_gate = sigmoid_f32(gx[j] + gh[j] + p_i[j] * c_prev);
        float forget_gate = sigmoid_f32(gx[H + j] + gh[H + j] + p_f[j] * c_prev);
        float candidate = tanh_f32(gx[2 * H + j] + gh[2 * H + j]);
        float cell = forget_gate * c_prev + input_gate * candidate;
        float output_gate = sigmoid_f32(gx[3 * H + j] + gh[3 * H + j] + p_o[j] * cell);
        c[j] = cell;
        h[j] = output_gate * tanh_f32(cell);
    }
}

static void gru_update(const float *restrict gx, const float *restrict gh, float *restrict h,
                       int H) {
    for (int j = 0; j < H; j++) {
        float reset_gate = sigmoid_f32(gx[j] + gh[j]);
        float update_gate = sigmoid_f32(gx[H + j] + gh[H + j]);
        float candidate = tanh_f32(gx[2 * H + j] + reset_gate * gh[2 * H + j]);
        h[j] = (1.0f - update_gate) * candidate + update_gate * h[j];
    }
}

/* The weights one step reads: every W_hh, every W_ih but the first layer's where a token's
 * row of the table replaces it, and the head. */
static long step_weights(const Stack *s, int from_table) {
    const long rows = s->gate_rows, H = s->hidden;
    long total = s->layers * rows * H + (s->layers - 1) * rows * H;
    if (!from_table)
        total += rows * s->input_size;
    return total + (s->head_w != NULL ? (long)s->head_size * H : 0);
}

/* One step of the stack: x (B, I) or, when x is NULL, the tokens. Returns 0, or -1 when a
 * token lies outside the embedding (nothing is changed then). */
int rnnkit_stream_step(const Stack *s, const float *x) {
    const int B = s->batch, H = s->hidden, rows = s->gate_rows;
    const int N = (rows + PANEL - 1) / PANEL * PANEL;
    if (x == NULL)
        for (int b = 0; b < B; b++)
            if (s->tokens[b] < 0 || s->tokens[b] >= s->vocab) return -1;
    const int split = step_weights(s, x == NULL && s->table != NULL) >= PARALLEL_WEIGHTS;
    for (int l = 0; l < s->layers; l++) {
        float *h = s->h + (size_t)l * B * H;
        for (int b = 0; b < B; b++) {
            const float *gx = s->gx + (size_t)b * N;
            if (l == 0 && x == NULL && s->table != NULL) {
                gx = s->table + (size_t)s->tokens[b] * rows;
            } else {
                const int I = s->input_size, K = l == 0 ? I : H;
                const float *v;
                if (l > 0)
                    v = h - (size_t)B * H + (size_t)b * H; /* the new h of the layer below */
                else if (x != NULL)
                    v = x + (size_t)b * I;
                else
                    v = s->embedding + (size_t)s->tokens[b] * I;
                matvec(s->w_ih[l], v, K, rows, s->b_ih[l], s->gx + (size_t)b * N, split);
            }
            float *gh = s->gh + (size_t)b * N;
            matvec(s->w_hh[l], h + (size_t)b * H, H, rows, s->b_hh[l], gh, split);
            if (s->kind == LSTM)
                lstm_update(gx, gh, s->peep[l], h + (size_t)b * H, s->c + ((size_t)l * B + b) * H, H);
            else if (s->kind == GRU)
                gru_update(gx, gh, h + (size_t)b * H, H);
            else
                rnn_update(gx, gh, h + (size_t)b * H, H, s->kind == RNN_RELU);
        }
    }
    if (s->head_w != NULL) {
        const int O = (s->head_size + PANEL - 1) / PANEL * PANEL;
        const float *top = s->h + (size_t)(s->layers - 1) * B * H;
        for (int b = 0; b < B; b++)
            matvec(s->head_w, top + (size_t)b * H, H, s->head_size, s->head_b, s->out + (size_t)b * O,
                   split);
    }
    return 0;
}
