/* The numeric helpers shared by lstm_gates.c, gru_gates.c and rnn_gates.c: the float32
 * exponential and the activations built on it, bfloat16 conversions, the threshold for
 * splitting a step over threads, and the bfloat16 tile product of rnn_gates.c.
 *
 * float32 uses the exponential below (Cephes' expf polynomial, error about 1e-7 relative),
 * which gcc vectorises; float64 uses glibc's tanh, which -ffast-math lets gcc call in its
 * vector form (libmvec), so the float64 path keeps full precision for the 1e-10 tests.
 * rnnkit/kernels/compiled.py hashes this header with the sources, so an edit rebuilds.
 */
#ifndef RNNKIT_GATES_H
#define RNNKIT_GATES_H

#include <math.h>
#include <stdint.h>
#include <string.h>

/* Steps with at least this many units (batch x hidden) split the batch over the OpenMP
 * threads; built with -fopenmp the library shares torch's libgomp (same soname), so it
 * follows torch.set_num_threads. Smaller steps stay on one thread: waking the others
 * costs more than the work. */
#define PARALLEL_FROM 8192

static inline float exp_f32(float x)
{
    x = fminf(fmaxf(x, -87.0f), 88.0f);
    float n = floorf(x * 1.44269504088896341f + 0.5f); /* x = n ln 2 + r, |r| <= ln2 / 2 */
    float r = x - n * 0.693359375f + n * 2.12194440e-4f; /* ln 2 in two parts (Cody-Waite) */
    float p = 1.9875691500e-4f;
    p = p * r + 1.3981999507e-3f;
    p = p * r + 8.3334519073e-3f;
    p = p * r + 4.1665795894e-2f;
    p = p * r + 1.6666665459e-1f;
    p = p * r + 5.0000001201e-1f;
    float y = p * r * r + r + 1.0f;
    int32_t bits = ((int32_t)n + 127) << 23; /* 2^n */
    float scale;
    memcpy(&scale, &bits, sizeof scale);
    return y * scale;
}

static inline float sigmoid_f32(float x) { return 1.0f / (1.0f + exp_f32(-x)); }
static inline float tanh_f32(float x) { return 1.0f - 2.0f / (1.0f + exp_f32(2.0f * x)); }
static inline double sigmoid_f64(double x) { return 0.5 + 0.5 * tanh(0.5 * x); }
static inline double tanh_f64(double x) { return tanh(x); }

static inline float from_bf16(uint16_t v)
{
    uint32_t bits = (uint32_t)v << 16;
    float x;
    memcpy(&x, &bits, sizeof x);
    return x;
}

static inline uint16_t to_bf16(float x) /* round to nearest even */
{
    uint32_t bits;
    memcpy(&bits, &x, sizeof bits);
    return (uint16_t)((bits + 0x7fffu + ((bits >> 16) & 1u)) >> 16);
}

/* Element k of the recurrent product: rec (same dtype) or rec_bf16. */
#define PRODUCT_AT(real, rec, rec_bf16, k) ((rec) ? (rec)[k] : (real)from_bf16((rec_bf16)[k]))

/* c (m x n, float32) = a (m x k, bfloat16) times w^T, w packed for the tiles (rnn_gates.c). */
void bf16_tile_product(long m, long n, long k, const uint16_t *a, long lda, const uint16_t *packed,
                       float *c, long ldc);

#endif
