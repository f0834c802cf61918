/* The numeric helpers shared by lstm_gates.c, gru_gates.c and rnn_gates.c: the float32
 * exponential and the activations built on it, bfloat16 conversions, and the threshold for
 * splitting a step over threads. The entry points are declared in rnnkit.h.
 *
 * The exponential below is Cephes' expf polynomial (error about 1e-7 relative), which gcc
 * vectorises. The C code is float32 only (with bfloat16 copies); float64 runs the Python
 * BPTT, its twin. rnnkit/kernels/compiled.py hashes the headers with the sources, so an edit
 * rebuilds.
 */
#ifndef RNNKIT_GATES_H
#define RNNKIT_GATES_H

#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "rnnkit.h"

/* Steps with at least this many units (batch x hidden) split the batch over the OpenMP
 * threads; built with -fopenmp the library shares torch's libgomp (same soname), so it
 * follows torch.set_num_threads. Smaller steps stay on one thread: waking the others
 * costs more than the work. Inside the loops over time on tiles, which split the batch
 * over the threads once for all steps (below), a step stays on its thread. */
#define PARALLEL_FROM 8192
/* A `for` statement over rows, split over the OpenMP threads where `split` holds, else run
 * right here. An `omp parallel for if (0)` still enters the OpenMP runtime: about 0.8 us a
 * call on this machine (a C harness), where a step of 16 rows on tiles takes 3 to 5 us and
 * calls the gate math once or twice. */
#define SPLIT_FOR(split, ...)                                                                 \
    if (split) {                                                                              \
        _Pragma("omp parallel for")                                                           \
        __VA_ARGS__                                                                           \
    } else {                                                                                  \
        __VA_ARGS__                                                                           \
    }
#ifdef _OPENMP
#include <omp.h>
#define SPLIT_STEP(batch, hidden) ((batch) * (hidden) >= PARALLEL_FROM && !omp_in_parallel())
#define THREAD_INDEX() omp_get_thread_num()
#define THREAD_COUNT() omp_get_num_threads()
#else
#define SPLIT_STEP(batch, hidden) 0
#define THREAD_INDEX() 0
#define THREAD_COUNT() 1
#endif

/* The loops over time on tiles split the batch over the threads in whole tiles of 16 rows:
 * the rows of a batch never meet in a recurrence, so each thread runs every step of its own
 * rows with no wait between steps, where splitting each step would wait at every step. The
 * sums over the batch (bias and peephole gradients) go into one slice per thread, added in
 * thread order afterwards, so a given thread count always gives the same sums. */
static inline int tile_threads(long batch)
{
#ifdef _OPENMP
    const long most = batch / 16, threads = omp_get_max_threads();
    return (int)(threads < most ? threads : (most > 0 ? most : 1));
#else
    (void)batch;
    return 1;
#endif
}

/* Room of n floats of this thread's own (64-byte aligned), or `shared` where none can be had;
 * release_scratch frees it. The (B, GH) product row of a step is written by the tile
 * product and read by the gate math at every step: as slices of one buffer, two threads'
 * rows sit side by side and the cores' prefetchers pull each other's lines (a (32, 128) RNN
 * step on two threads took 5.2 us with one buffer, 4.6 with its own, 3.9 on one thread;
 * a C harness). */
static inline float *own_scratch(long n, float *shared)
{
    float *own = aligned_alloc(64, (n * sizeof(float) + 63) / 64 * 64);
    return own ? own : shared;
}

static inline void release_scratch(float *own, float *shared)
{
    if (own != shared)
        free(own);
}

/* This thread's rows [*first, *first + *count) of the batch, inside the parallel region. */
static inline void thread_rows(long batch, long *first, long *count)
{
    const long tiles = batch / 16, threads = THREAD_COUNT(), me = THREAD_INDEX();
    const long begin = tiles * me / threads, end = tiles * (me + 1) / threads;
    *first = 16 * begin;
    *count = 16 * (end - begin);
}

/* The loops over time visit step t = visited(k) at their k-th pass forward (the backward
 * loops walk k from the last), and a forward step carries its state to row carried_to(k)
 * of the (T + 1, B, H) sequences: the row visited next, or row T, the final state. */
static inline long visited(long k, long steps, int reverse) { return reverse ? steps - 1 - k : k; }

static inline long carried_to(long k, long steps, int reverse)
{
    return k + 1 == steps ? steps : visited(k + 1, steps, reverse);
}

#define PRAGMA(text) _Pragma(#text)

/* Runs the statements on `threads` OpenMP threads (one without OpenMP), each with `first`
 * and `count` set to its rows of the batch (thread_rows) and `me` to its index, and with
 * denormals flushed on that thread meanwhile (denormals_off in rnn_gates.c says why). */
#define ON_THREAD_ROWS(threads, batch, ...)                                                   \
    PRAGMA(omp parallel num_threads(threads))                                                 \
    {                                                                                         \
        long first, count;                                                                    \
        thread_rows(batch, &first, &count);                                                   \
        const int me = THREAD_INDEX();                                                        \
        (void)me;                                                                             \
        const unsigned int csr = denormals_off();                                             \
        __VA_ARGS__                                                                           \
        denormals_restore(csr);                                                               \
    }

/* sums[0:n] += slices[t * stride : t * stride + n] for the threads t in order. */
static inline void add_slices(double *sums, const double *slices, long n, long stride,
                              int threads)
{
    for (int t = 0; t < threads; t++)
        for (long k = 0; k < n; k++)
            sums[k] += slices[t * stride + k];
}

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

/* Element k of the recurrent product: rec (float32), or rec_bf16 where low. */
#define PRODUCT_AT(low, rec, rec_bf16, k) ((low) ? from_bf16((rec_bf16)[k]) : (rec)[k])

/* row += bias over n numbers, where the caller folded the bias into the step instead of the
 * input projection (float32 with MKL: addmm's broadcast copy of the bias was a pass over the
 * whole (T, B, GH) projection). */
#define ADD_BIAS(row, bias, n)                                                                \
    if (bias) {                                                                               \
        _Pragma("omp simd") for (long k = 0; k < (n); k++)(row)[k] += (bias)[k];              \
    }

/* Runs the statements once with flag = 1 where cond holds, once with flag = 0 where not,
 * flag a compile-time constant in each: the compiler then builds one loop per case. An
 * argument tested inside an `omp simd` loop instead becomes masked work on every element,
 * which made the LSTM's forward gate math three times slower (34 against 13 us for a step
 * of 32 x 128 on this machine). */
#define SPECIALISE(flag, cond, ...)                                                           \
    if (cond) {                                                                               \
        enum { flag = 1 };                                                                    \
        __VA_ARGS__                                                                           \
    } else {                                                                                  \
        enum { flag = 0 };                                                                    \
        __VA_ARGS__                                                                           \
    }

#endif
