// A small persistent thread pool for splitting one workload into ranges.
//
// Workers sleep on a condition variable between jobs, so an idle pool costs
// nothing and does not compete with torch's own threads. Spawning threads per
// call would cost tens of microseconds, more than a whole optimizer step on a
// small model.
#pragma once

#include <algorithm>
#include <condition_variable>
#include <cstdint>
#include <functional>
#include <mutex>
#include <thread>

#include <pthread.h>
#include <vector>

namespace clrfast {

class ThreadPool {
 public:
  // The process-wide pool. Leaked on purpose: joining threads during
  // interpreter shutdown can hang. A forked child (a DataLoader worker, say)
  // inherits none of the parent's threads, and maybe a locked mutex, so it
  // gets a fresh pool of its own instead of waiting forever on the old one.
  static ThreadPool& instance() {
    static std::once_flag once;
    std::call_once(once, [] {
      slot() = new ThreadPool();
      pthread_atfork(nullptr, nullptr, [] { slot() = new ThreadPool(); });
    });
    return *slot();
  }

  // Asked once: hardware_concurrency() reads /sys on every call (~10 us), and each step asks.
  static int hardware_threads() {
    static const int n = [] {
      const unsigned c = std::thread::hardware_concurrency();
      return c == 0 ? 1 : static_cast<int>(c);
    }();
    return n;
  }

  // Calls fn(begin, end) over [0, n) split into `parts` contiguous ranges,
  // one on the calling thread, and returns when all are done.
  void run(int64_t n, int parts, const std::function<void(int64_t, int64_t)>& fn) {
    parts = static_cast<int>(std::min<int64_t>(std::max(parts, 1), std::max<int64_t>(n, 1)));
    if (parts <= 1) {
      fn(0, n);
      return;
    }
    std::lock_guard<std::mutex> job_lock(job_mutex_);  // one job at a time
    ensure_workers(parts - 1);
    {
      std::lock_guard<std::mutex> lk(mutex_);
      fn_ = &fn;
      n_ = n;
      parts_ = parts;
      pending_ = parts - 1;
      ++generation_;
    }
    cv_.notify_all();
    fn(0, range_end(0));
    std::unique_lock<std::mutex> lk(mutex_);
    done_cv_.wait(lk, [&] { return pending_ == 0; });
    fn_ = nullptr;
  }

 private:
  ThreadPool() = default;

  static ThreadPool*& slot() {
    static ThreadPool* pool = nullptr;
    return pool;
  }

  int64_t range_end(int part) const { return n_ * (part + 1) / parts_; }

  void ensure_workers(int count) {
    while (static_cast<int>(workers_.size()) < count) {
      const int index = static_cast<int>(workers_.size()) + 1;  // part 0 is the caller
      // generation_ only changes under job_mutex_, which the caller holds, so
      // the new worker waits for the job that is about to be posted.
      const uint64_t seen = generation_;
      workers_.emplace_back([this, index, seen] { loop(index, seen); });
      workers_.back().detach();
    }
  }

  void loop(int part, uint64_t seen) {
    for (;;) {
      const std::function<void(int64_t, int64_t)>* fn;
      {
        std::unique_lock<std::mutex> lk(mutex_);
        cv_.wait(lk, [&] { return generation_ != seen; });
        seen = generation_;
        if (part >= parts_) continue;  // not needed for this job
        fn = fn_;
      }
      (*fn)(n_ * part / parts_, range_end(part));
      std::lock_guard<std::mutex> lk(mutex_);
      if (--pending_ == 0) done_cv_.notify_one();
    }
  }

  std::mutex job_mutex_;
  std::mutex mutex_;
  std::condition_variable cv_, done_cv_;
  std::vector<std::thread> workers_;
  const std::function<void(int64_t, int64_t)>* fn_ = nullptr;
  int64_t n_ = 0;
  int parts_ = 1;
  int pending_ = 0;
  uint64_t generation_ = 0;
};

}  // namespace clrfast
