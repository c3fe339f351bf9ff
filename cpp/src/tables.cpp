#include "tables.hpp"

#include "thread_pool.hpp"

namespace clrfast {
namespace {

// Each loop is specialised on the schedule kind so that the compiler sees a
// branch-free body (floor, divide, select) it can vectorise; the generic
// schedule_at() path stays for kinds whose body calls libm anyway.
// The step is formed as base + (double)i with a 32-bit i: the sum is exact
// (all integers below 2^53), so it equals (double)(first + i), and int32 ->
// double converts in SIMD registers where int64 -> double needs AVX-512DQ.
template <typename T, typename F>
inline void fill(F f, int64_t first, int64_t n, T* out) {
  constexpr int64_t kChunk = int64_t{1} << 30;
  for (int64_t done = 0; done < n; done += kChunk) {
    const int32_t m = static_cast<int32_t>(n - done < kChunk ? n - done : kChunk);
    const double base = static_cast<double>(first + done);
    T* o = out + done;
    for (int32_t i = 0; i < m; ++i) o[i] = static_cast<T>(f(base + static_cast<double>(i)));
  }
}

template <typename T, typename F>
inline void gather(F f, const int64_t* steps, int64_t n, T* out) {
  for (int64_t i = 0; i < n; ++i) out[i] = static_cast<T>(f(static_cast<double>(steps[i])));
}

// Calls body(f) with f a callable double -> double, picking the cheapest
// form that gives the same result as schedule_at().
template <typename Body>
inline void with_evaluator(const Schedule& s, Quantity q, Body body) {
  const bool lr = q == Quantity::Lr;
  if (s.n == 1 && s.piece[0].kind == Kind::Cyclic) {
    const CyclicParams p = s.piece[0].cyclic;
    if (p.window == Window::Triangular && p.scale == ScaleKind::Triangular) {
      if (lr) {
        // cyclic_at() with the window and scale switches resolved, so the
        // loop body is branch-free and vectorises.
        body([p](double t) { return cyclic_combine(p, cyclic_triangle(p, t).s, 1.0).lr; });
        return;
      }
    }
  }
  if (lr) {
    body([&s](double t) { return schedule_at(s, t).lr; });
  } else {
    body([&s](double t) { return schedule_at(s, t).momentum; });
  }
}

template <typename T>
__attribute__((flatten, target_clones("avx512f", "avx2", "default"))) void range_kernel(const Schedule& s, Quantity q,
                                                                                 int64_t first, int64_t n, T* out) {
  with_evaluator(s, q, [&](auto f) { fill(f, first, n, out); });
}

template <typename T>
__attribute__((flatten, target_clones("avx512f", "avx2", "default"))) void steps_kernel(const Schedule& s, Quantity q,
                                                                                 const int64_t* steps, int64_t n,
                                                                                 T* out) {
  with_evaluator(s, q, [&](auto f) { gather(f, steps, n, out); });
}

int parts_for(int64_t n, int threads) {
  if (n < kParallelTableMin) return 1;
  return threads > 0 ? threads : ThreadPool::hardware_threads();
}

}  // namespace

template <typename T>
void table_range(const Schedule& s, Quantity q, int64_t first, int64_t n, T* out, int threads) {
  ThreadPool::instance().run(n, parts_for(n, threads),
                             [&](int64_t b, int64_t e) { range_kernel<T>(s, q, first + b, e - b, out + b); });
}

template <typename T>
void table_steps(const Schedule& s, Quantity q, const int64_t* steps, int64_t n, T* out, int threads) {
  ThreadPool::instance().run(n, parts_for(n, threads),
                             [&](int64_t b, int64_t e) { steps_kernel<T>(s, q, steps + b, e - b, out + b); });
}

template void table_range<double>(const Schedule&, Quantity, int64_t, int64_t, double*, int);
template void table_range<float>(const Schedule&, Quantity, int64_t, int64_t, float*, int);
template void table_steps<double>(const Schedule&, Quantity, const int64_t*, int64_t, double*, int);
template void table_steps<float>(const Schedule&, Quantity, const int64_t*, int64_t, float*, int);

}  // namespace clrfast
