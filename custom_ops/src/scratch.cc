#include "scratch.h"

namespace exprune {
namespace scratch {
namespace {

struct PoolHooks {
  void (*release)();
  void (*forget)();
};

struct State {
  std::mutex lock;
  long users = 0;
  std::vector<PoolHooks> pools;
};

State*& Slot() {
  static State* state = new State();  // see detail::Lock for when it is freed
  return state;
}
State& Shared() { return *Slot(); }

// Destroyed when the library is unloaded or the process exits: the pools and their state
// go with it unless a kernel is still alive (a session open at exit), which would count
// down into them later. Left to the process, they were reported lost at every unload.
struct AtUnload {
  ~AtUnload() {
    State*& state = Slot();
    {
      std::lock_guard<std::mutex> hold(state->lock);
      if (state->users != 0) return;
      for (const PoolHooks& pool : state->pools) {
        pool.release();
        pool.forget();
      }
    }
    delete state;
    state = nullptr;
  }
} at_unload;

}  // namespace

namespace detail {
std::mutex& Lock() { return Shared().lock; }
void OnLastUser(void (*release)(), void (*forget)()) { Shared().pools.push_back(PoolHooks{release, forget}); }
}  // namespace detail

User::User() {
  std::lock_guard<std::mutex> hold(detail::Lock());
  ++Shared().users;
}

User::~User() {
  std::lock_guard<std::mutex> hold(detail::Lock());
  if (--Shared().users == 0) {
    for (const PoolHooks& pool : Shared().pools) pool.release();
  }
}

}  // namespace scratch
}  // namespace exprune
