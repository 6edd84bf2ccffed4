// Large per-call scratch (the sparse conv's lists, listers' rows and tile planes, the
// early-exit conv's masks and input copies) kept between calls, so that tens of megabytes
// are not mapped, zeroed and faulted in again on every run, but not kept once the sessions
// that used them are gone. A call leases a set of buffers from its type's pool (an idle one,
// else a new one) and gives it back when it returns; every pool frees its idle sets when
// the last kernel of either op is destroyed (one count for all pools: a live session of
// one op keeps the other's sets too). Calls that overlap (one session run from several
// threads) hold a set each, so the memory kept is that of the most calls seen at once, not,
// as with per-thread storage, of every thread that has ever called.
#pragma once

#include <memory>
#include <mutex>
#include <utility>
#include <vector>

#include "kernel_util.h"

namespace exprune {
namespace scratch {

// A member of each kernel whose calls lease scratch: the pools are freed when the last
// one goes.
class User {
 public:
  User();
  ~User();
  User(const User&) = delete;
  User& operator=(const User&) = delete;
};

namespace detail {
// Guards every pool and the count of users. Freed when the library is unloaded (or the
// process exits) with no user left; kept otherwise, so that kernels outliving the
// library's statics (sessions still open at exit) can still give back and count down.
std::mutex& Lock();
// Called, under Lock(), by a pool the first time it is used: how to free its idle sets
// (when the last user goes), and then the pool itself (when the library goes).
void OnLastUser(void (*release)(), void (*forget)());
}  // namespace detail

// Grow-only, uninitialised, cache-line aligned storage for a pooled set (its large blocks
// mapped from the system: kernel_util.h, AllocateLines).
template <typename T>
class Grown {
 public:
  Grown() = default;
  Grown(const Grown&) = delete;
  Grown& operator=(const Grown&) = delete;
  ~Grown() { LineAligned<T>().deallocate(data_, capacity_); }
  // Room for n; what was there before a growth is gone.
  T* Get(size_t n) {
    if (capacity_ < n) {
      LineAligned<T>().deallocate(data_, capacity_);
      data_ = nullptr;
      capacity_ = 0;
      data_ = LineAligned<T>().allocate(n);
      capacity_ = n;
    }
    return data_;
  }

 private:
  T* data_ = nullptr;
  size_t capacity_ = 0;
};

template <typename T>
class Pool {
 public:
  class Lease {
   public:
    explicit Lease(std::unique_ptr<T> set) : set_(std::move(set)) {}
    ~Lease() { Pool::Give(std::move(set_)); }
    Lease(const Lease&) = delete;
    Lease& operator=(const Lease&) = delete;
    T& operator*() const { return *set_; }
    T* operator->() const { return set_.get(); }

   private:
    std::unique_ptr<T> set_;
  };

  // Throws std::bad_alloc when no set is idle and a new one cannot be made.
  static Lease Take() {
    {
      std::lock_guard<std::mutex> hold(detail::Lock());
      Sets& idle = Idle();
      if (!idle.empty()) {
        std::unique_ptr<T> set = std::move(idle.back());
        idle.pop_back();
        return Lease(std::move(set));
      }
    }
    return Lease(std::make_unique<T>());
  }

 private:
  using Sets = std::vector<std::unique_ptr<T>>;
  // A pointer, constant-initialised, so that the library's unloading can free it (Forget).
  static Sets*& Slot() {
    static Sets* idle = nullptr;
    return idle;
  }
  static Sets& Idle() {
    Sets*& idle = Slot();
    if (idle == nullptr) {
      std::unique_ptr<Sets> made = std::make_unique<Sets>();
      detail::OnLastUser(&Release, &Forget);
      idle = made.release();
    }
    return *idle;
  }
  static void Release() {
    if (Slot() != nullptr) Sets().swap(*Slot());
  }
  static void Forget() {
    delete Slot();
    Slot() = nullptr;
  }
  static void Give(std::unique_ptr<T> set) noexcept {
    if (set == nullptr) return;
    std::lock_guard<std::mutex> hold(detail::Lock());
    try {
      Idle().push_back(std::move(set));
    } catch (...) {  // no room to keep it: it is freed instead
    }
  }
};

}  // namespace scratch
}  // namespace exprune
