/* Dropout whose mask is a hash of (seed, element index): rnnkit/kernels/dropout.py.
 *
 * Element i is kept when draw(seed, i) >= threshold, where threshold = p * 2^32 and draw
 * is two rounds of MurmurHash3's 32-bit finaliser (Appleby), the seed's low half added to
 * the index before the first and its high half mixed in before the second. A kept element
 * is scaled by 1 / (1 - p), as torch.nn.Dropout does. Nothing is stored between forward and
 * backward: the backward calls the same function on the gradient with the same seed, which
 * draws the same mask. torch's dropout draws from its Mersenne Twister one element at a
 * time, 25 to 40 ms for a (64, 128, 384) tensor on two cores; this is one pass over memory.
 *
 * The mask depends on the seed and the index only, not on the thread count. The same hash
 * written with torch's integer operations (dropout.py, reference_keep) is the slow twin
 * this file is tested against, and the path on other devices.
 */
#include "gates.h"

static inline uint32_t mix32(uint32_t h) /* MurmurHash3 fmix32 */
{
    h ^= h >> 16;
    h *= 0x85ebca6bu;
    h ^= h >> 13;
    h *= 0xc2b2ae35u;
    h ^= h >> 16;
    return h;
}

static inline uint32_t draw(uint32_t seed_low, uint32_t seed_high, uint32_t i)
{
    return mix32(mix32(i + seed_low) ^ seed_high);
}

/* Blocks of this many elements are shared out over the OpenMP threads; smaller tensors stay
 * on one thread, where waking the others costs more than the work. */
#define DROPOUT_BLOCK 65536

#ifndef _OPENMP
static inline int omp_in_parallel(void) { return 0; }
#endif

/* out[i] = x[i] * scale where element i is kept, else 0, for float32 and for bfloat16 (its
 * top 16 bits); the blocks of DROPOUT_BLOCK elements are shared out over the threads. */
void dropout_f32(long n, uint64_t seed, uint32_t threshold, float scale, const float *x,
                 float *out)
{
    const uint32_t low = (uint32_t)seed, high = (uint32_t)(seed >> 32);
    const long blocks = (n + DROPOUT_BLOCK - 1) / DROPOUT_BLOCK;
#pragma omp parallel for if (blocks > 1 && !omp_in_parallel()) schedule(static)
    for (long b = 0; b < blocks; b++) {
        const long end = (b + 1) * DROPOUT_BLOCK < n ? (b + 1) * DROPOUT_BLOCK : n;
#pragma omp simd
        for (long i = b * DROPOUT_BLOCK; i < end; i++)
            out[i] = draw(low, high, (uint32_t)i) >= threshold ? x[i] * scale : 0.0f;
    }
}

void dropout_bf16(long n, uint64_t seed, uint32_t threshold, float scale, const uint16_t *x,
                  uint16_t *out)
{
    const uint32_t low = (uint32_t)seed, high = (uint32_t)(seed >> 32);
    const long blocks = (n + DROPOUT_BLOCK - 1) / DROPOUT_BLOCK;
#pragma omp parallel for if (blocks > 1 && !omp_in_parallel()) schedule(static)
    for (long b = 0; b < blocks; b++) {
        const long end = (b + 1) * DROPOUT_BLOCK < n ? (b + 1) * DROPOUT_BLOCK : n;
#pragma omp simd
        for (long i = b * DROPOUT_BLOCK; i < end; i++)
            out[i] = draw(low, high, (uint32_t)i) >= threshold ? to_bf16(from_bf16(x[i]) * scale) : 0;
    }
}
