/* The compiled CPU kernels on the dense sensitivity M (see _cpu_kernels.py): plain C99 with
   OpenMP and no torch headers, built on first use and called through ctypes. */
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#if defined(__AVX__)
#include <immintrin.h>
#endif

#define MIN(a, b) ((a) < (b) ? (a) : (b))
#define MAX(a, b) ((a) > (b) ? (a) : (b))
/* elements of a row segment formed in a stack buffer before it is streamed out */
#define STREAM_CHUNK 1024

/* out[0:n] <- buf[0:n] by stores that bypass the cache (AVX), so a row of M that is only
   written is never read from memory first (no read-for-ownership): a write pass instead of
   a read-and-write pass. Used only when M is larger than the last-level cache. */
#if defined(__AVX__)
static void stream_float(float *restrict out, const float *restrict buf, int64_t n) {
  int64_t j = 0;
  for (; j < n && ((uintptr_t)(out + j) & 31); ++j) out[j] = buf[j];
  for (; j + 8 <= n; j += 8) _mm256_stream_ps(out + j, _mm256_loadu_ps(buf + j));
  for (; j < n; ++j) out[j] = buf[j];
}
static void stream_double(double *restrict out, const double *restrict buf, int64_t n) {
  int64_t j = 0;
  for (; j < n && ((uintptr_t)(out + j) & 31); ++j) out[j] = buf[j];
  for (; j + 4 <= n; j += 4) _mm256_stream_pd(out + j, _mm256_loadu_pd(buf + j));
  for (; j < n; ++j) out[j] = buf[j];
}
#define STREAM_FENCE() _mm_sfence() /* streamed stores are weakly ordered */
#else
static void stream_float(float *restrict out, const float *restrict buf, int64_t n) {
  memcpy(out, buf, (size_t)n * sizeof(float));
}
static void stream_double(double *restrict out, const double *restrict buf, int64_t n) {
  memcpy(out, buf, (size_t)n * sizeof(double));
}
#define STREAM_FENCE() ((void)0)
#endif

/* out[j] (=|+=) sum_{r<k} w[r] * src[r][j], four sources per pass over out. */
#define DEFINE_WEIGHTED_SUM(T)                                                              \
static void weighted_sum_##T(T *restrict out, const T *const *src, const T *w, int64_t k, \
                             int64_t n, int accumulate) {                                   \
  int64_t r = 0, j;                                                                         \
  if (!accumulate) {                                                                        \
    if (k >= 4) {                                                                           \
      const T *restrict a = src[0], *restrict b = src[1], *restrict c = src[2],             \
              *restrict d = src[3];                                                         \
      const T wa = w[0], wb = w[1], wc = w[2], wd = w[3];                                   \
      for (j = 0; j < n; ++j) out[j] = wa * a[j] + wb * b[j] + wc * c[j] + wd * d[j];       \
      r = 4;                                                                                \
    } else if (k >= 2) {                                                                    \
      const T *restrict a = src[0], *restrict b = src[1];                                   \
      const T wa = w[0], wb = w[1];                                                         \
      for (j = 0; j < n; ++j) out[j] = wa * a[j] + wb * b[j];                               \
      r = 2;                                                                                \
    } else if (k == 1) {                                                                    \
      const T *restrict a = src[0];                                                         \
      const T wa = w[0];                                                                    \
      for (j = 0; j < n; ++j) out[j] = wa * a[j];                                           \
      r = 1;                                                                                \
    } else {                                                                                \
      memset(out, 0, (size_t)n * sizeof(T));                                               \
    }                                                                                       \
  }                                                                                         \
  for (; r + 4 <= k; r += 4) {                                                              \
    const T *restrict a = src[r], *restrict b = src[r + 1], *restrict c = src[r + 2],       \
            *restrict d = src[r + 3];                                                       \
    const T wa = w[r], wb = w[r + 1], wc = w[r + 2], wd = w[r + 3];                         \
    for (j = 0; j < n; ++j) out[j] += wa * a[j] + wb * b[j] + wc * c[j] + wd * d[j];        \
  }                                                                                         \
  for (; r + 2 <= k; r += 2) {                                                              \
    const T *restrict a = src[r], *restrict b = src[r + 1];                                 \
    const T wa = w[r], wb = w[r + 1];                                                       \
    for (j = 0; j < n; ++j) out[j] += wa * a[j] + wb * b[j];                                \
  }                                                                                         \
  for (; r < k; ++r) {                                                                      \
    const T *restrict a = src[r];                                                           \
    const T wa = w[r];                                                                      \
    for (j = 0; j < n; ++j) out[j] += wa * a[j];                                            \
  }                                                                                         \
}

/* M (S, N, P): M[s, i] <- sum_r wt[s, i, r] * M[s, idx[s, i, r]], in place. Per column block,
   the N row segments are first copied to a contiguous per-thread buffer (the one streaming
   read of M), then every row segment of M is rewritten from that copy (the one write). */
#define DEFINE_ROWS(T)                                                                      \
int rows_##T(const int64_t *idx, const T *wt, T *M, int64_t S, int64_t N, int64_t k,      \
             int64_t P, int64_t width, int threads) {                                       \
  const int64_t blocks = (P + width - 1) / width;                                           \
  int failed = 0;                                                                           \
  _Pragma("omp parallel num_threads(threads)")                                              \
  {                                                                                         \
    T *copy = (T *)malloc((size_t)(N * width) * sizeof(T));                                 \
    const T **src = (const T **)malloc((size_t)(k > 0 ? k : 1) * sizeof(T *));              \
    if (!copy || !src) {                                                                    \
      _Pragma("omp atomic write") failed = 1;                                               \
    } else {                                                                                \
      int64_t job;                                                                          \
      _Pragma("omp for schedule(static)")                                                   \
      for (job = 0; job < S * blocks; ++job) {                                              \
        const int64_t s = job / blocks, c0 = (job % blocks) * width;                        \
        const int64_t n = MIN(width, P - c0);                                               \
        T *base = M + s * N * P + c0;                                                       \
        const int64_t *ix = idx + s * N * k;                                                \
        const T *ws = wt + s * N * k;                                                       \
        int64_t i, r;                                                                       \
        for (i = 0; i < N; ++i) {                                                           \
          if (i + 2 < N) /* the next segments' lines in flight while this one is copied */ \
            for (r = 0; r < n; r += 64 / (int64_t)sizeof(T))                                 \
              __builtin_prefetch(base + (i + 2) * P + r, 0, 0);                              \
          memcpy(copy + i * n, base + i * P, (size_t)n * sizeof(T));                        \
        }                                                                                   \
        for (i = 0; i < N; ++i) {                                                           \
          for (r = 0; r < k; ++r) src[r] = copy + ix[i * k + r] * n;                        \
          weighted_sum_##T(base + i * P, src, ws + i * k, k, n, 0);                         \
        }                                                                                   \
      }                                                                                     \
    }                                                                                       \
    free(copy);                                                                             \
    free((void *)src);                                                                      \
  }                                                                                         \
  return failed;                                                                            \
}

/* out[0:m], the columns [c, c + m) of row i = a n + u of stream s, += the unit-local immediate
   term there: block p of the table imm (imm[3p] its first column, imm[3p + 1] its width L,
   imm[3p + 2] the address of its values C_p (S, halves, gates, n, L)) puts C_p[s, a, g, u, :]
   at columns imm[3p] + (g n + u) L + [0, L). These nimm * gates segments of the row lie in
   increasing column order: *cursor (0 at the row's start) walks them once along the row, and
   the return value is the first column still to be added to (INT64_MAX when none is left),
   so the caller skips the chunks before it with one comparison. */
#define DEFINE_IMMEDIATE(T)                                                                 \
static int64_t add_immediate_##T(T *out, int64_t c, int64_t m, const int64_t *imm,         \
                                 int64_t nimm, int64_t halves, int64_t gates, int64_t units, \
                                 int64_t s, int64_t i, int64_t *cursor) {                   \
  const int64_t a = i / units, u = i % units, end = c + m;                                  \
  int64_t q, x;                                                                             \
  for (q = *cursor; q < nimm * gates; ++q) {                                                \
    const int64_t p = q / gates, g = q % gates, L = imm[3 * p + 1];                         \
    const int64_t lo = imm[3 * p] + (g * units + u) * L;                                    \
    const T *v = (const T *)(intptr_t)imm[3 * p + 2]                                        \
                 + (((s * halves + a) * gates + g) * units + u) * L;                        \
    if (lo >= end) return lo;                                                               \
    for (x = MAX(lo, c); x < MIN(lo + L, end); ++x) out[x - c] += v[x - lo];                \
    if (lo + L > end) return end; /* the segment goes on in the next chunk */               \
    *cursor = q + 1;                                                                        \
  }                                                                                         \
  return INT64_MAX;                                                                         \
}

/* g[0:n] += w * v[0:n] (one row's share of the gradient, accumulated while it is in cache). */
#define DEFINE_AXPY(T)                                                                      \
static void axpy_##T(T *restrict g, T w, const T *restrict v, int64_t n) {                  \
  int64_t j;                                                                                \
  for (j = 0; j < n; ++j) g[j] += w * v[j];                                                 \
}

/* M (S, N, P): M[s, i] <- diag[s, i] * M[s, i] + sum_r wt[s, i, r] * M[s, cols[s, r]] (+ the
   unit-local immediate term of the table imm, nimm > 0: add_immediate_T, in the same pass).
   With stream (and no diag), each output row segment is formed in a stack buffer in chunks and
   streamed to M (stream_T): M is then written without being read.
   With delta (S, H) (S = E * B streams, B per member), also g (E, P) <- sum_b sum_{i < H}
   delta[e B + b, i] * M_new[e B + b, i], the transported gradient, from each row while it is
   still in cache: the step's update and gradient in one pass over M (a job is then a
   (member, column block), its B streams in turn, so no two threads add to one block of g). */
#define DEFINE_COLUMNS(T)                                                                   \
int columns_##T(const int64_t *cols, const T *wt, const T *diag, T *M, int64_t S,          \
                int64_t N, int64_t k, int64_t P, int64_t width, int stream,                 \
                const int64_t *imm, int64_t nimm, int64_t halves, int64_t gates,            \
                const T *delta, int64_t H, int64_t B, T *g, int threads) {                   \
  const int64_t blocks = (P + width - 1) / width, per = delta ? B : 1;                      \
  int failed = 0;                                                                           \
  _Pragma("omp parallel num_threads(threads)")                                              \
  {                                                                                         \
    T *picked = (T *)malloc((size_t)((k > 0 ? k : 1) * width) * sizeof(T));                 \
    const T **src = (const T **)malloc((size_t)(k > 0 ? 2 * k : 1) * sizeof(T *));          \
    T chunk[STREAM_CHUNK];                                                                  \
    if (!picked || !src) {                                                                  \
      _Pragma("omp atomic write") failed = 1;                                               \
    } else {                                                                                \
      const T **at = src + k; /* the sources' pointers at the current chunk */              \
      int64_t job, r;                                                                       \
      for (r = 0; r < k; ++r) src[r] = picked + r * width;                                  \
      _Pragma("omp for schedule(static)")                                                   \
      for (job = 0; job < S / per * blocks; ++job) {                                        \
        const int64_t c0 = (job % blocks) * width, n = MIN(width, P - c0);                  \
        T *gb = delta ? g + (job / blocks) * P + c0 : NULL;                                 \
        int64_t s, i, j, q;                                                                 \
        if (gb) memset(gb, 0, (size_t)n * sizeof(T));                                       \
        for (s = (job / blocks) * per; s < (job / blocks + 1) * per; ++s) {                 \
          T *base = M + s * N * P + c0;                                                     \
          const int64_t *cs = cols + s * k;                                                 \
          const T *ws = wt + s * N * k;                                                     \
          for (q = 0; q < k; ++q)                                                           \
            memcpy(picked + q * width, base + cs[q] * P, (size_t)n * sizeof(T));            \
          for (i = 0; i < N; ++i) {                                                         \
            T *restrict out = base + i * P;                                                 \
            const T di = gb && i < H ? delta[s * H + i] : 0;                                \
            int64_t cursor = 0, next = nimm ? 0 : INT64_MAX; /* next column Ī adds to */    \
            if (diag || !stream) {                                                          \
              if (diag) {                                                                   \
                const T dd = diag[s * N + i];                                               \
                for (j = 0; j < n; ++j) out[j] *= dd;                                       \
              }                                                                             \
              weighted_sum_##T(out, src, ws + i * k, k, n, diag != NULL);                   \
              if (c0 + n > next)                                                            \
                add_immediate_##T(out, c0, n, imm, nimm, halves, gates, N / halves, s, i, &cursor); \
              if (gb && i < H) axpy_##T(gb, di, out, n);                                    \
            } else if (k == 4) { /* the common case inline, in chunks of 4 lines */         \
              const T *restrict a = src[0], *restrict b = src[1], *restrict c = src[2],     \
                      *restrict d = src[3];                                                 \
              const T wa = ws[i * k], wb = ws[i * k + 1], wc = ws[i * k + 2], wd = ws[i * k + 3]; \
              int64_t e;                                                                    \
              for (j = 0; j < n; j = e) {                                                   \
                e = MIN(n, j + 256 / (int64_t)sizeof(T)                                     \
                               - (int64_t)(((uintptr_t)(out + j) & 63) / sizeof(T)));       \
                for (q = j; q < e; ++q)                                                     \
                  chunk[q - j] = wa * a[q] + wb * b[q] + wc * c[q] + wd * d[q];             \
                if (c0 + e > next)                                                          \
                  next = add_immediate_##T(chunk, c0 + j, e - j, imm, nimm, halves, gates, N / halves, s, i, &cursor); \
                stream_##T(out + j, chunk, e - j);                                          \
                if (gb && i < H) axpy_##T(gb + j, di, chunk, e - j);                        \
              }                                                                             \
            } else {                                                                        \
              int64_t e; /* chunks end on cache lines, so no line is streamed in halves */ \
              for (j = 0; j < n; j = e) {                                                   \
                e = MIN(n, j + STREAM_CHUNK - (int64_t)(((uintptr_t)(out + j) & 63) / sizeof(T))); \
                for (r = 0; r < k; ++r) at[r] = src[r] + j;                                 \
                weighted_sum_##T(chunk, at, ws + i * k, k, e - j, 0);                       \
                if (c0 + e > next)                                                          \
                  next = add_immediate_##T(chunk, c0 + j, e - j, imm, nimm, halves, gates, N / halves, s, i, &cursor); \
                stream_##T(out + j, chunk, e - j);                                          \
                if (gb && i < H) axpy_##T(gb + j, di, chunk, e - j);                        \
              }                                                                             \
            }                                                                               \
          }                                                                                 \
        }                                                                                   \
        if (stream) STREAM_FENCE();                                                         \
      }                                                                                     \
    }                                                                                       \
    free(picked);                                                                           \
    free((void *)src);                                                                      \
  }                                                                                         \
  return failed;                                                                            \
}

/* out (E, P) <- sum_{b < B, h < H} delta[e, b, h] * M[e, b, h, :] for M (E, B, N, P): the
   gradient g = delta . M[:H], one read pass over those rows of M. Per (member, column block)
   the B*H rows are summed into the block of out four at a time (weighted_sum), so the block
   stays in cache while the rows stream through it. */
#define DEFINE_GRADIENT(T)                                                                  \
int gradient_##T(const T *M, const T *delta, T *out, int64_t E, int64_t B, int64_t N,      \
                 int64_t H, int64_t P, int64_t width, int threads) {                        \
  const int64_t blocks = (P + width - 1) / width, rows = B * H;                             \
  int failed = 0;                                                                           \
  _Pragma("omp parallel num_threads(threads)")                                              \
  {                                                                                         \
    const T **src = (const T **)malloc((size_t)(rows > 0 ? rows : 1) * sizeof(T *));        \
    if (!src) {                                                                             \
      _Pragma("omp atomic write") failed = 1;                                               \
    } else {                                                                                \
      int64_t job, b, h;                                                                    \
      _Pragma("omp for schedule(static)")                                                   \
      for (job = 0; job < E * blocks; ++job) {                                              \
        const int64_t e = job / blocks, c0 = (job % blocks) * width;                        \
        const int64_t n = MIN(width, P - c0);                                               \
        for (b = 0; b < B; ++b)                                                             \
          for (h = 0; h < H; ++h) src[b * H + h] = M + ((e * B + b) * N + h) * P + c0;     \
        weighted_sum_##T(out + e * P + c0, src, delta + e * rows, rows, n, 0);              \
      }                                                                                     \
    }                                                                                       \
    free((void *)src);                                                                      \
  }                                                                                         \
  return failed;                                                                            \
}

/* idx (R, k) <- the indices of the k largest of each row of scores (R, n), largest first (as
   torch.topk). Each row keeps its k + 1 largest, so the answer is unique exactly when those
   are strictly decreasing and none is NaN: the rows where it is not (ties at or inside the
   k-th place, NaN, −inf within the k largest) get idx[row, 0] = −1 and are counted in the
   return value, and the caller recomputes them with torch.topk, so the result never depends
   on how ties are broken here. −1: a buffer could not be allocated; −2: not this kernel's
   case (k outside [1, n], n ≥ 2³¹); the caller then uses torch.topk for all rows. For k + 1 <= TOPK_LANES_MAX the rows go TOPK_LANES at a time, one row per
   vector lane: a block of rows is transposed into a buffer, and every entry enters its
   row's sorted list by compares and selects (no branch to mispredict on random scores, which
   is what makes torch.topk's introselect slow here); larger k inserts row by row. */
#define TOPK_LANES 8
#define TOPK_LANES_MAX 16
static int64_t top_k_lanes(const float *x, int64_t lanes, int64_t n, int64_t k, int64_t kk,
                           float *t, int64_t *idx) {
  float val[TOPK_LANES_MAX][TOPK_LANES];
  int32_t pos[TOPK_LANES_MAX][TOPK_LANES];
  int32_t nan[TOPK_LANES] = {0};
  int64_t j, l, q, bad = 0;
  for (l = 0; l < TOPK_LANES; ++l)
    for (j = 0; j < n; ++j) t[j * TOPK_LANES + l] = l < lanes ? x[l * n + j] : 0.0f;
#if defined(__AVX2__)
  {
    __m256 V[TOPK_LANES_MAX], any_nan = _mm256_setzero_ps();
    __m256i I[TOPK_LANES_MAX];
    for (q = 0; q < kk; ++q) { V[q] = _mm256_set1_ps(-INFINITY); I[q] = _mm256_set1_epi32(-1); }
    for (j = 0; j < n; ++j) {
      const __m256 v = _mm256_loadu_ps(t + j * TOPK_LANES);
      const __m256 jv = _mm256_castsi256_ps(_mm256_set1_epi32((int32_t)j));
      any_nan = _mm256_or_ps(any_nan, _mm256_cmp_ps(v, v, _CMP_UNORD_Q));
      for (q = kk - 1; q > 0; --q) {
        const __m256 above = _mm256_cmp_ps(v, V[q - 1], _CMP_GT_OQ), here = _mm256_cmp_ps(v, V[q], _CMP_GT_OQ);
        V[q] = _mm256_blendv_ps(_mm256_blendv_ps(V[q], v, here), V[q - 1], above);
        I[q] = _mm256_castps_si256(_mm256_blendv_ps(
            _mm256_blendv_ps(_mm256_castsi256_ps(I[q]), jv, here), _mm256_castsi256_ps(I[q - 1]), above));
      }
      const __m256 here = _mm256_cmp_ps(v, V[0], _CMP_GT_OQ);
      V[0] = _mm256_blendv_ps(V[0], v, here);
      I[0] = _mm256_castps_si256(_mm256_blendv_ps(_mm256_castsi256_ps(I[0]), jv, here));
    }
    for (q = 0; q < kk; ++q) { _mm256_storeu_ps(val[q], V[q]); _mm256_storeu_si256((__m256i *)pos[q], I[q]); }
    {
      float nans[TOPK_LANES];
      _mm256_storeu_ps(nans, any_nan);
      for (l = 0; l < TOPK_LANES; ++l) nan[l] = nans[l] != 0.0f;
    }
  }
#else
  for (q = 0; q < kk; ++q)
    for (l = 0; l < TOPK_LANES; ++l) { val[q][l] = -INFINITY; pos[q][l] = -1; }
  for (j = 0; j < n; ++j) {
    const float *v = t + j * TOPK_LANES;
    for (l = 0; l < TOPK_LANES; ++l) nan[l] |= v[l] != v[l];
    for (q = kk - 1; q > 0; --q)
      for (l = 0; l < TOPK_LANES; ++l) {
        const int above = v[l] > val[q - 1][l], here = v[l] > val[q][l];
        const float nv = above ? val[q - 1][l] : (here ? v[l] : val[q][l]);
        const int32_t np = above ? pos[q - 1][l] : (here ? (int32_t)j : pos[q][l]);
        val[q][l] = nv;
        pos[q][l] = np;
      }
    for (l = 0; l < TOPK_LANES; ++l) {
      const int here = v[l] > val[0][l];
      pos[0][l] = here ? (int32_t)j : pos[0][l];
      val[0][l] = here ? v[l] : val[0][l];
    }
  }
#endif
  for (l = 0; l < lanes; ++l) {
    int b = nan[l];
    /* an empty slot (only −inf left, never inserted) is fine past the k-th place: it holds the
       sentinel −inf, below every entry kept */
    for (q = 0; q < kk && !b; ++q)
      b = (q < k && pos[q][l] < 0) || (q + 1 < kk && q < k && !(val[q][l] > val[q + 1][l]));
    bad += b;
    for (q = 0; q < k; ++q) idx[l * k + q] = pos[q][l] < 0 ? 0 : pos[q][l];
    if (b) idx[l * k] = -1; /* marks the row for torch.topk */
  }
  return bad;
}

static int64_t top_k_row(const float *x, int64_t n, int64_t k, int64_t kk, float *val, int64_t *pos,
                         int64_t *idx) {
  int64_t m = 0, j, q;
  int bad = 0;
  for (j = 0; j < n; ++j) {
    const float v = x[j];
    if (v != v) { bad = 1; continue; }
    if (m == kk && !(v > val[kk - 1])) continue;
    q = m < kk ? m++ : kk - 1; /* the slot it enters from (the last, when full) */
    while (q > 0 && v > val[q - 1]) { val[q] = val[q - 1]; pos[q] = pos[q - 1]; --q; }
    val[q] = v;
    pos[q] = j;
  }
  bad = bad || m < kk;
  for (q = 0; q + 1 < m && q < k && !bad; ++q) bad = !(val[q] > val[q + 1]);
  for (q = 0; q < k; ++q) idx[q] = q < m ? pos[q] : 0;
  if (bad) idx[0] = -1; /* marks the row for torch.topk */
  return bad;
}

int top_k_float(const float *scores, int64_t R, int64_t n, int64_t k, int64_t *idx, int threads) {
  const int64_t kk = MIN(k + 1, n), lanes = kk <= TOPK_LANES_MAX ? TOPK_LANES : 1;
  const int64_t jobs = (R + lanes - 1) / lanes;
  int64_t ambiguous = 0;
  int failed = 0;
  if (R <= 0) return 0;
  if (k <= 0 || k > n || n > INT32_MAX) return -2; /* not this kernel's case */
  _Pragma("omp parallel num_threads(threads) if (R * n > (1 << 16))")
  {
    float *buf = (float *)malloc((size_t)(lanes > 1 ? n * TOPK_LANES : kk) * sizeof(float));
    int64_t *pos = (int64_t *)malloc((size_t)kk * sizeof(int64_t));
    int64_t job;
    /* every thread takes part in the loop, so a failed allocation only skips its rows */
    _Pragma("omp for schedule(static) reduction(+ : ambiguous)")
    for (job = 0; job < jobs; ++job) {
      const int64_t r0 = job * lanes;
      if (!buf || !pos) {
        _Pragma("omp atomic write") failed = 1;
      } else if (lanes > 1) {
        ambiguous += top_k_lanes(scores + r0 * n, MIN(lanes, R - r0), n, k, kk, buf, idx + r0 * k);
      } else {
        ambiguous += top_k_row(scores + r0 * n, n, k, kk, buf, pos, idx + r0 * k);
      }
    }
    free(buf);
    free(pos);
  }
  return failed ? -1 : (int)MIN(ambiguous, 1 << 30);
}

DEFINE_WEIGHTED_SUM(float)
DEFINE_WEIGHTED_SUM(double)
DEFINE_IMMEDIATE(float)
DEFINE_IMMEDIATE(double)
DEFINE_AXPY(float)
DEFINE_AXPY(double)
DEFINE_ROWS(float)
DEFINE_ROWS(double)
DEFINE_COLUMNS(float)
DEFINE_COLUMNS(double)
DEFINE_GRADIENT(float)
DEFINE_GRADIENT(double)
