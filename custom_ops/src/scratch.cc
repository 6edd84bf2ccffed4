#include "scratch.h"

namespace exprune {
namespace scratch {
namespace {

struct State {
  std::mutex lock;
  long users = 0;
  std::vector<void (*)()> releases;
};

State& Shared() {
  static State* state = new State();  // never destroyed: see detail::Lock
  return *state;
}

}  // namespace

namespace detail {
std::mutex& Lock() { return Shared().lock; }
void OnLastUser(void (*release)()) { Shared().releases.push_back(release); }
}  // namespace detail

User::User() {
  std::lock_guard<std::mutex> hold(detail::Lock());
  ++Shared().users;
}

User::~User() {
  std::lock_guard<std::mutex> hold(detail::Lock());
  if (--Shared().users == 0) {
    for (void (*release)() : Shared().releases) release();
  }
}

}  // namespace scratch
}  // namespace exprune
