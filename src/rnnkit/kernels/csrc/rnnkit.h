/* Every entry point of the library, declared once with its arguments named. Every source
 * includes this header, so the compiler holds each definition to its line here, and
 * rnnkit/kernels/compiled.py reads the lines (one per prototype, types long, int, unsigned
 * int, uint32_t, uint64_t, float, void and pointers) to call each function by those names.
 * What each computes is in the comment above its definition. */
#ifndef RNNKIT_H
#define RNNKIT_H

#include <stdint.h>

/* One step of the gate math (lstm_gates.c, gru_gates.c, rnn_gates.c), float32. */
void lstm_forward(long batch, long hidden, float *gates, const float *rec, const uint16_t *rec_bf16, const float *bias, const float *h_prev, const float *c_prev, const float *p_i, const float *p_f, const float *p_o, const uint8_t *mask, float *c_new, float *h_next, float *c_next, float *out, uint16_t *h_next_bf16);
void lstm_backward(long batch, long hidden, const float *gates, const float *c_prev, const float *c_new, const float *p_i, const float *p_f, const float *p_o, const uint8_t *mask, const float *d_out, const float *rec, const uint16_t *rec_bf16, float *dh, float *dc, float *d_gates, uint16_t *d_gates_bf16, double *dp_i, double *dp_f, double *dp_o, double *d_bias);
void gru_forward(long batch, long hidden, float *gates, const float *rec, const uint16_t *rec_bf16, const float *bias, const float *b_hn, const float *h_prev, const uint8_t *mask, float *h_n, float *h_next, float *out, uint16_t *h_next_bf16);
void gru_backward(long batch, long hidden, const float *gates, const float *h_n, const float *h_prev, const uint8_t *mask, const float *d_out, const float *rec, const uint16_t *rec_bf16, float *dh, float *d_ih, float *d_hh, uint16_t *d_ih_bf16, uint16_t *d_hh_bf16, double *d_bias_ih, double *d_bias_hn);
void rnn_forward(long batch, long hidden, int relu, float *pre, const float *rec, const uint16_t *rec_bf16, const float *bias, const float *h_prev, const uint8_t *mask, float *h_next, float *out, uint16_t *h_next_bf16);
void rnn_backward(long batch, long hidden, int relu, const float *h_new, const uint8_t *mask, const float *d_out, const float *rec, const uint16_t *rec_bf16, float *dh, float *da, uint16_t *da_bf16, double *d_bias);

/* The loops over time with the products on AMX tiles (the same files). */
void lstm_forward_tiles(long steps, long batch, long hidden, int reverse, float *gates, const uint16_t *w_hh, float *rec, float *h_prev_seq, uint16_t *h_in, float *c_prev_seq, float *c_new_seq, const float *p_i, const float *p_f, const float *p_o, const uint8_t *mask, float *out);
void lstm_backward_tiles(long steps, long batch, long hidden, int reverse, const float *gates, const float *c_prev_seq, const float *c_new_seq, const float *p_i, const float *p_f, const float *p_o, const uint8_t *mask, const float *d_out, const uint16_t *w_hh_t, float *rec, float *dh, float *dc, float *d_row, uint16_t *d_low, double *dp_i, double *dp_f, double *dp_o, double *d_bias);
void gru_forward_tiles(long steps, long batch, long hidden, int reverse, float *gates, const uint16_t *w_hh, float *rec, const float *b_hn, float *h_prev_seq, uint16_t *h_in, const uint8_t *mask, float *h_n_seq, float *out);
void gru_backward_tiles(long steps, long batch, long hidden, int reverse, const float *gates, const float *h_n_seq, const float *h_prev_seq, const uint8_t *mask, const float *d_out, const uint16_t *w_hh_t, float *rec, float *dh, float *d_ih_row, float *d_hh_row, uint16_t *d_ih_low, uint16_t *d_hh_low, double *d_bias_ih, double *d_bias_hn);
void rnn_forward_tiles(long steps, long batch, long hidden, int relu, int reverse, float *pre, const uint16_t *w_hh, float *rec, float *h_prev_seq, uint16_t *h_in, const uint8_t *mask, float *out);
void rnn_backward_tiles(long steps, long batch, long hidden, int relu, int reverse, const float *h_new, const uint8_t *mask, const float *d_out, const uint16_t *w_hh_t, float *rec, float *dh, float *d_row, uint16_t *d_low, double *d_bias);

/* The loops over time with MKL's packed products (mkl_loops.c). */
void mkl_products_use(void *size_function, void *pack_function, void *compute_function);
long mkl_packed_bytes(long m, long n, long k);
void lstm_forward_mkl(long steps, long batch, long hidden, int reverse, int kept, float *gates, const float *bias, const float *w_hh, float *packed, float *rec, float *h_prev_seq, float *c_prev_seq, float *c_new_seq, const float *p_i, const float *p_f, const float *p_o, const uint8_t *mask, float *out);
void lstm_backward_mkl(long steps, long batch, long hidden, int reverse, const float *gates, const float *c_prev_seq, const float *c_new_seq, const float *p_i, const float *p_f, const float *p_o, const uint8_t *mask, const float *d_out, const float *w_hh, float *packed, float *rec, float *dh, float *dc, float *d_gates, double *dp_i, double *dp_f, double *dp_o, double *d_bias);
void gru_forward_mkl(long steps, long batch, long hidden, int reverse, float *gates, const float *bias, const float *w_hh, float *packed, float *rec, const float *b_hn, float *h_prev_seq, const uint8_t *mask, float *h_n_seq, float *out);
void gru_backward_mkl(long steps, long batch, long hidden, int reverse, const float *gates, const float *h_n_seq, const float *h_prev_seq, const uint8_t *mask, const float *d_out, const float *w_hh, float *packed, float *rec, float *dh, float *d_ih, float *d_hh, double *d_bias_ih, double *d_bias_hn);
void rnn_forward_mkl(long steps, long batch, long hidden, int relu, int reverse, float *pre, const float *bias, const float *w_hh, float *packed, float *rec, float *h_prev_seq, const uint8_t *mask, float *out);
void rnn_backward_mkl(long steps, long batch, long hidden, int relu, int reverse, const float *h_new, const uint8_t *mask, const float *d_out, const float *w_hh, float *packed, float *rec, float *dh, float *d_pre, double *d_bias);

/* bfloat16 products on AMX tiles, their packing and the weight gradients (tiles.c). */
int bf16_tiles_ready(void);
int bf16_tile_threads(long batch);
void bf16_pack_tiles(long n, long k, const float *src, long row_stride, long col_stride, uint16_t *packed);
void bf16_tile_product(long m, long n, long k, const uint16_t *a, long lda, const uint16_t *packed, float *c, long ldc);
void bf16_tile_product_rows(long m, long n, long k, const uint16_t *a, long lda, const uint16_t *packed, float *c, long ldc, const float *bias);
void bf16_tile_product_rows_f32(long m, long n, long k, const float *a, long lda, const uint16_t *packed, float *c, long ldc, const float *bias);
void bf16_weight_grads(long k, long m, const uint16_t *d, long ldd, uint16_t *d_t, long n_x, const void *x, long ldx, int x_f32, uint16_t *x_packed, float *dw_x, const uint16_t *d_h, long ldd_h, uint16_t *d_h_t, long n_h, const uint16_t *h, long ldh, uint16_t *h_packed, float *dw_h);

/* Dropout's hashed mask (dropout.c) and the flush of denormals (rnn_gates.c). */
void dropout_f32(long n, uint64_t seed, uint32_t threshold, float scale, const float *x, float *out);
void dropout_bf16(long n, uint64_t seed, uint32_t threshold, float scale, const uint16_t *x, uint16_t *out);
unsigned int denormals_off(void);
void denormals_restore(unsigned int old);

/* One step of a whole stack for rnnkit.Stream (step.c). */
struct Stack;
int rnnkit_stream_step(const struct Stack *stack, const float *x);
int rnnkit_matvec_threads(long weights);

#endif
