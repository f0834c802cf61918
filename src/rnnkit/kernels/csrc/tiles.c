/* The AMX tiles of recent x86 CPUs: their bfloat16 matrix product, the layouts it wants, and
 * the weight gradients of mixed precision built on both (rnnkit/kernels/common.py calls
 * them; the loops over time on tiles in lstm_gates.c, gru_gates.c and rnn_gates.c call the
 * product at every step).
 *
 * bf16_tile_product: a tile product has no set-up cost, where oneDNN's call costs about 30 us
 * and MKL's float32 product of a (32, 128) row about 12 us: for the small rows of a recurrent
 * step it is 3-5x faster. Only whole tiles: m a multiple of 16, n of 16, k of 32; the
 * caller checks (common.py, tiles_run).
 *
 * bf16_pack_tiles rounds a float32 weight to bfloat16 in the tiles' pair layout, from the
 * weight or from a transposed view of it, for every product on tiles;
 * bf16_tile_product_rows_f32 rounds float32 rows of a (a layer's input) 16 at a time.
 *
 * bf16_weight_grads: dW = sum over the steps of da_t^T x_t, one product over all T x B rows.
 * oneDNN's bfloat16 call for it ran at 250 to 550 GFLOP/s on this machine, a third of a
 * bfloat16 RNN's training step at (32, 100, 128), and rounds its sums to bfloat16. The sum
 * runs over the rows of both operands, and the tiles want the left operand with the summed
 * index along its rows and the right one in their pair layout. So da (k x m) is transposed
 * once, for dW_ih and dW_hh alike, and each x (k x n) is packed in pairs of rows; the rows
 * past k are zeros up to a multiple of 32, which changes no sum. The product then runs in
 * chunks of the summed index that keep the packed x in the core's L2 cache, each OpenMP
 * thread on its own rows of dW, accumulating in float32 tiles.
 */
#include "gates.h"

#define MIN(a, b) ((a) < (b) ? (a) : (b))

/* The tile code needs x86-64 and a compiler that knows AMX (gcc 11, clang); elsewhere, or
 * built with -DRNNKIT_NO_TILES (tests), the entry points below report no tiles and do
 * nothing, and the Python side never calls them. */
#if !defined(RNNKIT_NO_TILES) && defined(__x86_64__) && (defined(__clang__) || __GNUC__ >= 11)
#define HAVE_TILES 1
#else
#define HAVE_TILES 0
#endif

#if HAVE_TILES
#include <cpuid.h>
#include <immintrin.h>
#include <sys/syscall.h>
#include <unistd.h>

/* 1 if this CPU has AMX-BF16 and the kernel lets this process use the tile registers. */
int bf16_tiles_ready(void)
{
    unsigned a, b, c, d;
    if (!__get_cpuid_count(7, 0, &a, &b, &c, &d) || !((d >> 22) & 1) || !((d >> 24) & 1))
        return 0;
    return syscall(SYS_arch_prctl, 0x1023 /* ARCH_REQ_XCOMP_PERM */, 18 /* XTILEDATA */) == 0;
}

#define VECTOR_ISA __attribute__((target("avx512f,avx512bw")))

/* The rows (k x 32, row stride ld) of src from row r0 and column c0, as 32 vectors of 32
 * 16-bit elements, zero past row k and column m. */
VECTOR_ISA static inline void load_block(__m512i rows[32], const uint16_t *src, long ld, long k,
                                         long m, long r0, long c0)
{
    const __mmask32 columns = m - c0 >= 32 ? ~0u : (1u << (m - c0)) - 1;
    for (long r = 0; r < 32; r++)
        rows[r] = r0 + r < k ? _mm512_maskz_loadu_epi16(columns, src + (r0 + r) * ld + c0)
                             : _mm512_setzero_si512();
}

/* A block transpose in rounds: the round of distance s swaps, between each row i with bit s
 * clear and its partner i + s, the second block of s elements of row i with the first of
 * row i + s, in every 2s elements (the top-right and bottom-left s x s blocks of every
 * 2s x 2s block). Rounds s = 16, 8, 4, 2, 1 transpose 32 x 32 16-bit elements; each round
 * is one cheap instruction a row: lane shuffles for 256 and 128 bits, 64-bit unpacks, a shift
 * and a blend for 32 and 16. (A general two-source permute a row and round took 1,500
 * cycles a block.) */
VECTOR_ISA static inline void swap_256(__m512i *a, __m512i *b)
{
    const __m512i x = *a, y = *b;
    *a = _mm512_shuffle_i64x2(x, y, 0x44);
    *b = _mm512_shuffle_i64x2(x, y, 0xEE);
}

VECTOR_ISA static inline void swap_128(__m512i *a, __m512i *b)
{
    const __m512i even = _mm512_shuffle_i64x2(*a, *b, 0x88); /* a0 a2 b0 b2 */
    const __m512i odd = _mm512_shuffle_i64x2(*a, *b, 0xDD);  /* a1 a3 b1 b3 */
    *a = _mm512_shuffle_i64x2(even, even, 0xD8);             /* a0 b0 a2 b2 */
    *b = _mm512_shuffle_i64x2(odd, odd, 0xD8);               /* a1 b1 a3 b3 */
}

VECTOR_ISA static inline void swap_64(__m512i *a, __m512i *b)
{
    const __m512i x = *a, y = *b;
    *a = _mm512_unpacklo_epi64(x, y);
    *b = _mm512_unpackhi_epi64(x, y);
}

VECTOR_ISA static inline void swap_32(__m512i *a, __m512i *b)
{
    const __m512i x = *a, y = *b;
    *a = _mm512_mask_blend_epi32(0xAAAA, x, _mm512_slli_epi64(y, 32));
    *b = _mm512_mask_blend_epi32(0xAAAA, _mm512_srli_epi64(x, 32), y);
}

VECTOR_ISA static inline void swap_16(__m512i *a, __m512i *b)
{
    const __m512i x = *a, y = *b;
    *a = _mm512_mask_blend_epi16(0xAAAAAAAA, x, _mm512_slli_epi32(y, 16));
    *b = _mm512_mask_blend_epi16(0xAAAAAAAA, _mm512_srli_epi32(x, 16), y);
}

#define ROUND(rows, count, s, swap)                                                           \
    _Pragma("GCC unroll 32") for (int i = 0; i < (count); i++) if (!(i & (s)))               \
        swap(&(rows)[i], &(rows)[i + (s)])

/* 32 x 32 elements of 16 bits, and 16 x 16 of 32 bits. */
VECTOR_ISA static inline void transpose_block(__m512i rows[32])
{
    ROUND(rows, 32, 16, swap_256);
    ROUND(rows, 32, 8, swap_128);
    ROUND(rows, 32, 4, swap_64);
    ROUND(rows, 32, 2, swap_32);
    ROUND(rows, 32, 1, swap_16);
}

VECTOR_ISA static inline void transpose_words(__m512i rows[16])
{
    ROUND(rows, 16, 8, swap_256);
    ROUND(rows, 16, 4, swap_128);
    ROUND(rows, 16, 2, swap_64);
    ROUND(rows, 16, 1, swap_32);
}

/* Rows [first, end) of dst (row stride ldd) = columns [first, end) of src (k x m, row stride
 * ld) transposed, zeros in the columns past k up to kpad, a multiple of 32. A power-of-two
 * row stride puts the 32 rows a block writes in one set of the L1 cache (a (8192, 1024)
 * transpose took 19 ms on one core with ldd = 8192), so ldd is padded by 32. */
VECTOR_ISA static void transpose_columns(long k, long first, long end, const uint16_t *src,
                                         long ld, uint16_t *dst, long ldd, long kpad)
{
    __m512i rows[32];
    for (long c0 = first; c0 < end; c0 += 32)
        for (long r0 = 0; r0 < kpad; r0 += 32) {
            load_block(rows, src, ld, k, end, r0, c0);
            transpose_block(rows);
            for (long c = c0; c < MIN(c0 + 32, end); c++)
                _mm512_storeu_si512(dst + c * ldd + r0, rows[c - c0]);
        }
}

/* The permute that interleaves two runs of 16 elements held in one vector (the first run,
 * then the second) into pairs: out[2j + i] = in[16 i + j]. */
static const uint16_t PAIR_ORDER[32] __attribute__((aligned(64))) = {
    0, 16, 1, 17, 2, 18, 3, 19, 4, 20, 5, 21, 6, 22, 7, 23,
    8, 24, 9, 25, 10, 26, 11, 27, 12, 28, 13, 29, 14, 30, 15, 31,
};

/* packed[nb][kb][r][2j + i] = src[32 kb + 2r + i][16 nb + j], zero past row k: x (k x n,
 * row stride ld) in the layout of bf16_tile_product's w, for w = x^T (n x kpad). */
VECTOR_ISA static void pack_pairs(long k, long n, const uint16_t *src, long ld,
                                  uint16_t *packed, long kpad, long kb_first, long kb_end)
{
    const __m512i pairs = _mm512_load_si512(PAIR_ORDER);
    const long blocks_k = kpad / 32;
    __m512i rows[32];
    for (long kb = kb_first; kb < kb_end; kb++)
        for (long c0 = 0; c0 < n; c0 += 32) {
            load_block(rows, src, ld, k, n, 32 * kb, c0);
            for (long half = 0; half < 2 && c0 + 16 * half < n; half++) {
                uint16_t *out = packed + ((c0 / 16 + half) * blocks_k + kb) * 512;
                for (long r = 0; r < 16; r++) {
                    const __m512i a = rows[2 * r], b = rows[2 * r + 1];
                    const __m512i shift = half ? _mm512_shuffle_i64x2(a, b, 0xEE)
                                               : _mm512_shuffle_i64x2(a, b, 0x44);
                    /* shift: the 16 columns of this half of row 2r, then of row 2r + 1 */
                    _mm512_storeu_si512(out + 32 * r, _mm512_permutexvar_epi16(pairs, shift));
                }
            }
        }
}

/* The (nb, kb) block of bf16_pack_tiles from a weight with contiguous rows: 16 rows of 32
 * floats, rounded (to nearest even, as torch rounds) into 16 vectors of 16 bfloat16 pairs,
 * whose 16 x 16 transpose of pairs is the block. */
VECTOR_ISA __attribute__((target("avx512bf16"))) static void
pack_rows_block(const float *in, long row_stride, uint16_t *out)
{
    __m512i rows[16];
    for (int j = 0; j < 16; j++) {
        const float *row = in + j * row_stride;
        rows[j] = (__m512i)_mm512_cvtne2ps_pbh(_mm512_loadu_ps(row + 16), _mm512_loadu_ps(row));
    }
    transpose_words(rows);
    for (int r = 0; r < 16; r++)
        _mm512_storeu_si512(out + 32 * r, rows[r]);
}

/* The same block from a transposed view (element (r, c) at in[r + c * col_stride]): row r
 * of the block interleaves columns 2r and 2r + 1 of the view, two contiguous runs; columns
 * from `count` on read as zeros (the rows past k of a weight gradient's x). */
VECTOR_ISA __attribute__((target("avx512bf16"))) static void
pack_columns_block(const float *in, long col_stride, long count, uint16_t *out)
{
    const __m512i pairs = _mm512_load_si512(PAIR_ORDER);
    for (int r = 0; r < 16; r++) {
        const float *even = in + 2 * r * col_stride, *odd = even + col_stride;
        const __m512 low = 2 * r < count ? _mm512_loadu_ps(even) : _mm512_setzero_ps();
        const __m512 high = 2 * r + 1 < count ? _mm512_loadu_ps(odd) : _mm512_setzero_ps();
        const __m512i both = (__m512i)_mm512_cvtne2ps_pbh(high, low);
        _mm512_storeu_si512(out + 32 * r, _mm512_permutexvar_epi16(pairs, both));
    }
}

static int vector_packing(void)
{
    static int ready = -1;
    if (ready < 0)
        ready = __builtin_cpu_supports("avx512bw") && __builtin_cpu_supports("avx512bf16");
    return ready;
}
#endif

/* w (n x k, float32, element (r, c) at src[r * row_stride + c * col_stride], so a transposed
 * view needs no copy) rounded to bfloat16 and packed for bf16_tile_product:
 * packed[nb][kb][r][2j + i] = w[16 nb + j][32 kb + 2 r + i]. torch's permuted copy of the
 * same took 0.6 to 1.6 ms for a (1152, 384) weight, packed twice a training step; its twin
 * is rnnkit/kernels/common.py's tile_weight on torch. A weight or its transposed view runs
 * in vector blocks, other strides element by element: 16 against 51 us for a (128, 128)
 * weight, packed three times a training step, and 54 against 600 us for (1152, 384).
 * Vector rounding reads a denormal float (below 1.2e-38) as zero, as the fused paths'
 * products do anyway. n a multiple of 16, k of 32. */
void bf16_pack_tiles(long n, long k, const float *src, long row_stride, long col_stride,
                     uint16_t *packed)
{
    const long blocks_n = n / 16, blocks_k = k / 32;
#if HAVE_TILES
    const int rows = col_stride == 1, columns = row_stride == 1 && !rows;
    if ((rows || columns) && vector_packing()) {
#pragma omp parallel for schedule(static) if (n * k >= (1L << 18) && !omp_in_parallel())
        for (long block = 0; block < blocks_n * blocks_k; block++) {
            const long nb = block / blocks_k, kb = block % blocks_k;
            const float *in = src + 16 * nb * row_stride + 32 * kb * col_stride;
            if (rows)
                pack_rows_block(in, row_stride, packed + block * 512);
            else
                pack_columns_block(in, col_stride, 32, packed + block * 512);
        }
        return;
    }
#endif
#pragma omp parallel for schedule(static) if (n * k >= (1L << 16) && !omp_in_parallel())
    for (long nb = 0; nb < blocks_n; nb++)
        for (long kb = 0; kb < blocks_k; kb++) {
            uint16_t *out = packed + (nb * blocks_k + kb) * 512;
            const float *in = src + 16 * nb * row_stride + 32 * kb * col_stride;
            for (long j = 0; j < 16; j++)
                for (long c = 0; c < 32; c++)
                    out[(c / 2) * 32 + 2 * j + c % 2] = to_bf16(in[j * row_stride + c * col_stride]);
        }
}

#if HAVE_TILES
struct tile_config {
    uint8_t palette_id, start_row, reserved[14];
    uint16_t colsb[16];
    uint8_t rows[16];
};

/* How a tile product starts its sums: at zero, at c's values, or at a bias row. */
enum start { AT_ZERO, AT_C, AT_BIAS };

/* c (m x n, float32, row stride ldc) = start + a (m x 32 blocks, bfloat16, row stride lda)
 * times w^T, with w (n x 32 blocks) packed in blocks of 16 rows by 32 columns, each in the
 * tiles' pair layout (bf16_pack_tiles), `stride` blocks apart from one 16 rows to the next.
 * Tiles 0-3 accumulate four blocks of 16 columns of c, tile 4 holds a block of a, tile 5 one
 * of w. A bias row loads into all 16 rows of a tile with a row stride of 0. */
__attribute__((target("amx-tile,amx-bf16"))) static void
tile_product(long m, long n, long blocks, long stride, const uint16_t *a, long lda,
             const uint16_t *packed, float *c, long ldc, enum start start, const float *bias)
{
    struct tile_config config;
    memset(&config, 0, sizeof config);
    config.palette_id = 1;
    for (int t = 0; t < 6; t++) {
        config.rows[t] = 16;
        config.colsb[t] = 64;
    }
    _tile_loadconfig(&config);
    const long groups = n / 16, block = 16 * 32;
    for (long m0 = 0; m0 < m; m0 += 16) {
        for (long n0 = 0; n0 < groups; n0 += 4) {
            const long count = groups - n0 < 4 ? groups - n0 : 4;
            const uint16_t *w = packed + n0 * stride * block;
            float *out = c + m0 * ldc + n0 * 16;
            const float *from = start == AT_C ? out : bias + n0 * 16;
            const long from_stride = start == AT_C ? ldc * 4 : 0;
            if (start == AT_ZERO) {
                _tile_zero(0);
                _tile_zero(1);
                _tile_zero(2);
                _tile_zero(3);
            } else {
                _tile_loadd(0, from, from_stride);
                if (count > 1)
                    _tile_loadd(1, from + 16, from_stride);
                if (count > 2)
                    _tile_loadd(2, from + 32, from_stride);
                if (count > 3)
                    _tile_loadd(3, from + 48, from_stride);
            }
            for (long k0 = 0; k0 < blocks; k0++) {
                _tile_loadd(4, a + m0 * lda + k0 * 32, lda * 2);
                _tile_loadd(5, w + k0 * block, 64);
                _tile_dpbf16ps(0, 4, 5);
                if (count > 1) {
                    _tile_loadd(5, w + (stride + k0) * block, 64);
                    _tile_dpbf16ps(1, 4, 5);
                }
                if (count > 2) {
                    _tile_loadd(5, w + (2 * stride + k0) * block, 64);
                    _tile_dpbf16ps(2, 4, 5);
                }
                if (count > 3) {
                    _tile_loadd(5, w + (3 * stride + k0) * block, 64);
                    _tile_dpbf16ps(3, 4, 5);
                }
            }
            _tile_stored(0, out, ldc * 4);
            if (count > 1)
                _tile_stored(1, out + 16, ldc * 4);
            if (count > 2)
                _tile_stored(2, out + 32, ldc * 4);
            if (count > 3)
                _tile_stored(3, out + 48, ldc * 4);
        }
    }
    _tile_release();
}

/* c (m x n) = a (m x k) times w^T, w (n x k) packed by bf16_pack_tiles: the per-step product
 * of the loops over time on tiles. */
void bf16_tile_product(long m, long n, long k, const uint16_t *a, long lda, const uint16_t *packed,
                       float *c, long ldc)
{
    tile_product(m, n, k / 32, k / 32, a, lda, packed, c, ldc, AT_ZERO, NULL);
}

/* The same plus a bias row (or none: NULL), with the rows of c over the OpenMP threads in
 * whole tiles, for the products over all steps at once (the input projection, 16 x B x T
 * rows), which one thread would run alone. Inside a parallel region it stays on the calling
 * thread. The bias folded in saves a pass over the (T x B, GH) result. */
void bf16_tile_product_rows(long m, long n, long k, const uint16_t *a, long lda,
                            const uint16_t *packed, float *c, long ldc, const float *bias)
{
    ON_THREAD_ROWS(tile_threads(m), m,
        tile_product(count, n, k / 32, k / 32, a + first * lda, lda, packed, c + first * ldc,
                     ldc, bias ? AT_BIAS : AT_ZERO, bias);
    )
}

/* One weight gradient: out (m x n, float32) = a_t (m x kpad, row stride lda) times x (the
 * pairs of `packed`) for this thread's rows [first, first + count), in chunks of the summed
 * index that keep about 512 KB of packed x in L2 for every block of rows. */
static void weight_grad_rows(long first, long count, long n, long kpad, const uint16_t *a_t,
                             long lda, const uint16_t *packed, float *out)
{
    const long chunk = (1L << 18) / n / 32 * 32 > 32 ? (1L << 18) / n / 32 * 32 : 32;
    for (long k0 = 0; k0 < kpad; k0 += chunk)
        tile_product(count, n, MIN(chunk, kpad - k0) / 32, kpad / 32, a_t + first * lda + k0, lda,
                     packed + k0 * 16, out + first * n, n, k0 > 0 ? AT_C : AT_ZERO, NULL);
}

/* bf16_tile_product_rows from float32 rows of a (row stride lda), rounded to bfloat16 in
 * blocks of 16 rows by up to 512 columns in a buffer on this thread's stack, so that no
 * bfloat16 copy of a whole input is made (a layer's float32 input, for its projection).
 * The blocks of columns after the first add to c. k a multiple of 32. */
VECTOR_ISA __attribute__((target("avx512bf16"))) void
bf16_tile_product_rows_f32(long m, long n, long k, const float *a, long lda,
                           const uint16_t *packed, float *c, long ldc, const float *bias)
{
    enum { COLUMNS = 512 };
    ON_THREAD_ROWS(tile_threads(m), m,
        uint16_t rows[16 * COLUMNS]; /* (16, COLUMNS) bfloat16 */
        for (long m0 = first; m0 < first + count; m0 += 16)
            for (long k0 = 0; k0 < k; k0 += COLUMNS) {
                const long width = MIN(COLUMNS, k - k0);
                for (long r = 0; r < 16; r++)
                    for (long j = 0; j < width; j += 32) {
                        const float *in = a + (m0 + r) * lda + k0 + j;
                        const __m512bh both =
                            _mm512_cvtne2ps_pbh(_mm512_loadu_ps(in + 16), _mm512_loadu_ps(in));
                        _mm512_storeu_si512(rows + r * width + j, (__m512i)both);
                    }
                const enum start start = k0 > 0 ? AT_C : (bias ? AT_BIAS : AT_ZERO);
                tile_product(16, n, width / 32, k / 32, rows, width, packed + k0 * 16,
                             c + m0 * ldc, ldc, start, bias);
            }
    )
}

/* dw_x (m x n_x) = d^T x and, unless h is NULL, dw_h (m x n_h) = d_h^T h: d and d_h (k x m),
 * x (k x n_x) and h (k x n_h) bfloat16 with row strides ldd, ldd_h, ldx, ldh, but x float32
 * where x_f32. d_h is d for the LSTM and the RNN (transposed once), another for the GRU.
 * Scratch: d_t and d_h_t (m x (kpad + 32)), x_packed (n_x x kpad), h_packed (n_h x kpad),
 * kpad = k rounded up to 32. m, n_x and n_h multiples of 16; the caller checks
 * (rnnkit/kernels/common.py, weight_grads_on_tiles). One parallel region: each thread
 * transposes the columns of d that become its own rows of d_t and of the gradients, and
 * packs its share of x and h, which every thread reads after the barrier. (Three regions
 * from Python woke the threads three times: 280 us of transpose in a training step against
 * 50 us alone.) */
void bf16_weight_grads(long k, long m, const uint16_t *d, long ldd, uint16_t *d_t, long n_x,
                       const void *x, long ldx, int x_f32, uint16_t *x_packed, float *dw_x,
                       const uint16_t *d_h, long ldd_h, uint16_t *d_h_t, long n_h,
                       const uint16_t *h, long ldh, uint16_t *h_packed, float *dw_h)
{
    const long kpad = (k + 31) / 32 * 32, lda = kpad + 32, blocks = kpad / 32;
    const int shared = !h || d_h == d;
    ON_THREAD_ROWS(tile_threads(m), m,
        transpose_columns(k, first, first + count, d, ldd, d_t, lda, kpad);
        if (!shared)
            transpose_columns(k, first, first + count, d_h, ldd_h, d_h_t, lda, kpad);
        const int threads = THREAD_COUNT();
        const long kb_first = blocks * me / threads, kb_end = blocks * (me + 1) / threads;
        if (x_f32) /* converted here: the layer's float32 input is never copied in bfloat16 */
            for (long kb = kb_first; kb < kb_end; kb++)
                for (long nb = 0; nb < n_x / 16; nb++)
                    pack_columns_block((const float *)x + 32 * kb * ldx + 16 * nb, ldx,
                                       k - 32 * kb, x_packed + (nb * blocks + kb) * 512);
        else
            pack_pairs(k, n_x, x, ldx, x_packed, kpad, kb_first, kb_end);
        if (h)
            pack_pairs(k, n_h, h, ldh, h_packed, kpad, kb_first, kb_end);
        _Pragma("omp barrier")
        weight_grad_rows(first, count, n_x, kpad, d_t, lda, x_packed, dw_x);
        if (h)
            weight_grad_rows(first, count, n_h, kpad, shared ? d_t : d_h_t, lda, h_packed, dw_h);
    )
}
#else
int bf16_tiles_ready(void) { return 0; }
void bf16_tile_product(long m, long n, long k, const uint16_t *a, long lda,
                       const uint16_t *packed, float *c, long ldc) {}
void bf16_tile_product_rows(long m, long n, long k, const uint16_t *a, long lda,
                            const uint16_t *packed, float *c, long ldc, const float *bias) {}
void bf16_tile_product_rows_f32(long m, long n, long k, const float *a, long lda,
                                const uint16_t *packed, float *c, long ldc, const float *bias) {}
void bf16_weight_grads(long k, long m, const uint16_t *d, long ldd, uint16_t *d_t, long n_x,
                       const void *x, long ldx, int x_f32, uint16_t *x_packed, float *dw_x,
                       const uint16_t *d_h, long ldd_h, uint16_t *d_h_t, long n_h,
                       const uint16_t *h, long ldh, uint16_t *h_packed, float *dw_h) {}
#endif

/* How many threads the loops over time on tiles split a batch of this size over (gates.h). */
int bf16_tile_threads(long batch) { return tile_threads(batch); }
