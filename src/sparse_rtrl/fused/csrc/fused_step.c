/* The small work of one fused step of a vanilla RNN (sparse_rtrl.fused), for float and double.
 *
 *   prologue   z = W_ih x + b_ih + W_hh h + b_hh,  a = phi(z),  d = alpha phi'(z),
 *              h' = (1 - alpha) h + alpha a,  y_hat = W_o h' + b_o,  e = y_hat - y,
 *              L = sum e^2 (/ O), err = c e,  delta = W_o^T err,
 *              and J = diag(d) W_hh + (1 - alpha) I  (or only its diagonal)
 *   local      M += I_bar (unit i's entries of each block: d_i u_l)
 *   check      the readout's gradient; all-finite check of every gradient; h <- h'
 *   update     SGD or Adam on every parameter
 *
 * Plain C, no torch headers: sparse_rtrl/fused/_kernel.py compiles it on first use into the
 * library's private kernel cache and calls it through ctypes on the tensors' data pointers.
 * Shapes, dtypes and contiguity are checked on the Python side, once. The dot products are
 * vectorised by `omp simd` reductions (-fopenmp-simd: no threads, the sums reassociated).
 */
#include <math.h>
#include <stdint.h>
#include <string.h>

#define DEFINE(T, TANH, SQRT)                                                                 \
double prologue_##T(const T *w_ih, const T *b_ih, const T *w_hh, const T *b_hh,              \
                    const T *w_o, const T *b_o, T *u, const T *x, const T *y, T *h, T *d,     \
                    T *y_hat, T *err, T *delta, T *J, int64_t I, int64_t N, int64_t O,        \
                    int jacobian, double alpha, int relu, double scale, int mean) {           \
  const T *hp = u + I;                                                                        \
  memcpy(u, x, sizeof(T) * I);                                                                \
  for (int64_t i = 0; i < N; i++) {                                                           \
    T z = b_ih ? b_ih[i] + b_hh[i] : (T)0;                                                    \
    const T *wi = w_ih + i * I, *wh = w_hh + i * N;                                           \
    _Pragma("omp simd reduction(+:z)")                                                       \
    for (int64_t l = 0; l < I; l++) z += wi[l] * x[l];                                        \
    _Pragma("omp simd reduction(+:z)")                                                       \
    for (int64_t j = 0; j < N; j++) z += wh[j] * hp[j];                                       \
    T a, s;                                                                                   \
    if (relu) { a = z > 0 ? z : (T)0; s = z > 0 ? (T)1 : (T)0; }                              \
    else { a = TANH(z); s = (T)1 - a * a; }                                                   \
    d[i] = (T)alpha * s;                                                                      \
    h[i] = alpha == 1.0 ? a : (T)(1.0 - alpha) * hp[i] + (T)alpha * a;                        \
  }                                                                                           \
  T loss = 0;  /* in T: a float32 loss overflows where the reference's does */               \
  for (int64_t o = 0; o < O; o++) {                                                           \
    T v = b_o ? b_o[o] : (T)0;                                                                \
    const T *wo = w_o + o * N;                                                                \
    _Pragma("omp simd reduction(+:v)")                                                       \
    for (int64_t i = 0; i < N; i++) v += wo[i] * h[i];                                        \
    y_hat[o] = v;                                                                             \
    T e = v - y[o];                                                                           \
    loss += e * e;                                                                            \
    err[o] = (T)scale * e;                                                                    \
  }                                                                                           \
  for (int64_t i = 0; i < N; i++) delta[i] = 0;                                               \
  for (int64_t o = 0; o < O; o++) {                                                           \
    const T *wo = w_o + o * N;                                                                \
    for (int64_t i = 0; i < N; i++) delta[i] += wo[i] * err[o];                               \
  }                                                                                           \
  if (jacobian == 1) {                                                                        \
    for (int64_t i = 0; i < N; i++) {                                                         \
      const T *wh = w_hh + i * N;                                                             \
      T *Ji = J + i * N;                                                                      \
      for (int64_t j = 0; j < N; j++) Ji[j] = d[i] * wh[j];                                   \
      Ji[i] += (T)(1.0 - alpha);                                                              \
    }                                                                                         \
  } else if (jacobian == 2) {                                                                 \
    for (int64_t i = 0; i < N; i++) J[i] = d[i] * w_hh[i * N + i] + (T)(1.0 - alpha);         \
  }                                                                                           \
  return mean ? (double)(loss / (T)O) : (double)loss;                                        \
}                                                                                             \
                                                                                              \
/* M += I_bar: unit i's entries of each block, d_i u_l. M is (P, N) when transposed (full  \
 * RTRL), else (N, P). The blocks are [W_ih (I per unit, u = x), W_hh (N, u = h), b_ih (1),  \
 * b_hh (1)]. (g = M^T delta is left to BLAS: its gemv is faster than a plain loop.) */       \
void add_local_##T(T *M, int transposed, const T *d, const T *u, int64_t I, int64_t N,      \
                   int bias) {                                                                \
  int64_t widths[4] = {I, N, 1, 1};                                                           \
  const T *inputs[4] = {u, u + I, 0, 0};                                                      \
  int blocks = bias ? 4 : 2;                                                                  \
  int64_t P = N * (I + N) + (bias ? 2 * N : 0);                                               \
  int64_t s_i = transposed ? 1 : P, s_p = transposed ? N : 1;                                 \
  int64_t off = 0;                                                                            \
  for (int b = 0; b < blocks; b++) {                                                          \
    int64_t c = widths[b];                                                                    \
    for (int64_t i = 0; i < N; i++) {                                                         \
      T *at = M + i * s_i + (off + i * c) * s_p;                                              \
      for (int64_t l = 0; l < c; l++) at[l * s_p] += inputs[b] ? d[i] * inputs[b][l] : d[i];  \
    }                                                                                         \
    off += N * c;                                                                             \
  }                                                                                           \
}                                                                                             \
                                                                                              \
static int finite_##T(const T *a, int64_t n) {                                                \
  T s = 0;                                                                                    \
  _Pragma("omp simd reduction(+:s)")                                                         \
  for (int64_t k = 0; k < n; k++) s += a[k] * (T)0;                                           \
  return s == 0;  /* 0 * inf and 0 * nan are nan */                                           \
}                                                                                             \
                                                                                              \
static void step_##T(T *p, const T *g, T *m, T *v, int64_t n, int adam, double lr,           \
                       double b1, double b2, double eps, double step, double bc2) {          \
  if (!adam) { for (int64_t k = 0; k < n; k++) p[k] -= (T)lr * g[k]; return; }                \
  for (int64_t k = 0; k < n; k++) {                                                           \
    T gk = g[k];                                                                              \
    m[k] += (T)(1.0 - b1) * (gk - m[k]);                                                      \
    v[k] = (T)b2 * v[k] + (T)(1.0 - b2) * gk * gk;                                            \
    T denom = SQRT(v[k]) / (T)bc2 + (T)eps;                                                   \
    p[k] -= (T)step * m[k] / denom;                                                           \
  }                                                                                           \
}                                                                                             \
                                                                                              \
/* The readout's gradient err h^T into g_w_o, then the all-finite check of every gradient;  \
 * on success h_prev <- h (the step is kept) and 0, else 1 with nothing kept. */              \
int check_##T(const T *g, const T *err, T *u, const T *h, T *g_w_o, int64_t I, int64_t N,    \
              int64_t O, int bias) {                                                          \
  int64_t P = N * (I + N) + (bias ? 2 * N : 0);                                               \
  for (int64_t o = 0; o < O; o++)                                                             \
    for (int64_t i = 0; i < N; i++) g_w_o[o * N + i] = err[o] * h[i];                         \
  if (!finite_##T(g, P) || !finite_##T(g_w_o, O * N) || !finite_##T(err, O)) return 1;        \
  memcpy(u + I, h, sizeof(T) * N);                                                            \
  return 0;                                                                                   \
}                                                                                             \
                                                                                              \
/* SGD or Adam on every parameter: w_ih, w_hh, b_ih, b_hh (or 0), w_o, b_o (or 0), with g   \
 * the cell's flat gradient in that order and m, v (Adam) flat over cell + readout. */         \
void update_##T(T *w_ih, T *w_hh, T *b_ih, T *b_hh, T *w_o, T *b_o, const T *g,             \
                const T *err, const T *g_w_o, T *m, T *v, int64_t I, int64_t N, int64_t O,    \
                int adam, double lr, double b1, double b2, double eps, double step,           \
                double bc2) {                                                                 \
  T *params[6] = {w_ih, w_hh, b_ih, b_hh, w_o, b_o};                                          \
  int64_t sizes[6] = {N * I, N * N, N, N, O * N, O};                                          \
  const T *grads[6] = {g, g + N * I, g + N * I + N * N, g + N * I + N * N + N, g_w_o, err};   \
  int64_t at = 0;                                                                             \
  for (int k = 0; k < 6; k++) {                                                               \
    if (!params[k]) continue;                                                                 \
    step_##T(params[k], grads[k], m ? m + at : 0, v ? v + at : 0, sizes[k], adam, lr, b1, b2, \
             eps, step, bc2);                                                                 \
    at += sizes[k];                                                                           \
  }                                                                                           \
}

DEFINE(float, tanhf, sqrtf)
DEFINE(double, tanh, sqrt)
