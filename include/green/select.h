// select: wait for the first of several channel operations, as Go's select statement.
//
//   int fired = green::select(
//       green::recv_case(jobs, [&](std::optional<Job> j) { ... }),   // j == nullopt: closed
//       green::send_case(results, r, [&](bool sent) { ... }),         // sent == false: closed
//       green::timeout(50ms));                                        // or green::default_case()
//   // fired: index of the case that ran, or green::kSelectTimeout / green::kSelectDefault.
//
// Semantics (Go's): if several cases are ready, one is chosen uniformly at random; otherwise
// the caller parks on all of them until one becomes ready (or the timeout passes), and exactly
// that one completes: the others are left untouched. With default_case() select never parks.
// A receive on a closed channel is ready (its callback gets nullopt); a send on a closed channel
// is ready and fails (callback gets false; Go panics). The callback runs in the caller after
// every channel lock is released. Channels are locked in address order, so selects over the
// same channels in different orders cannot deadlock. With no channel cases and no timeout,
// select parks forever (Go's `select {}`).
//
// Works from green threads and plain threads. Each case object refers to its channel and
// callback: build them in the select call, as above. At most kMaxSelectCases channel cases (plus
// a default or a timeout): more do not compile.
#pragma once

#include <chrono>
#include <cstdint>
#include <optional>
#include <type_traits>
#include <utility>

#include "green/channel.h"

namespace green {

inline constexpr int kSelectDefault = -1;
inline constexpr int kSelectTimeout = -2;
// select() keeps one lock and one poll-order slot per case on its stack (Go's select has the
// same kind of bound, 65536, for the same reason).
inline constexpr int kMaxSelectCases = 64;

namespace detail {

struct SelectCase {
  virtual ~SelectCase() = default;
  virtual ChannelCore& core() = 0;
  virtual bool is_send() const = 0;
  // Lock held; completes now if possible (then releases the lock and returns true).
  virtual bool try_locked() = 0;
  // Runs the callback with the result (after every lock is released).
  virtual void fire() = 0;
  ChanNode node;
};

struct SelectOptions {
  bool has_default = false;
  int64_t timeout_ns = -1;  // -1: none
};

// n <= kMaxSelectCases: select() checks it at compile time.
int select_cases(SelectCase** cases, int n, SelectOptions options);

template <typename T, typename F>
struct RecvCase final : SelectCase {
  RecvCase(Channel<T>& c, F f) : channel(c), callback(std::move(f)) { node.slot = &result; }
  ChannelCore& core() override { return channel.core(); }
  bool is_send() const override { return false; }
  bool try_locked() override { return channel.try_recv_locked(result); }
  void fire() override { callback(std::move(result)); }
  Channel<T>& channel;
  F callback;
  std::optional<T> result;
};

template <typename T, typename F>
struct SendCase final : SelectCase {
  SendCase(Channel<T>& c, T v, F f) : channel(c), value(std::move(v)), callback(std::move(f)) {
    node.slot = &value;
  }
  ChannelCore& core() override { return channel.core(); }
  bool is_send() const override { return true; }
  bool try_locked() override {
    if (channel.try_send_locked(value)) {
      sent = true;
      return true;
    }
    if (channel.core().closed) {  // ready, and fails
      channel.core().lock.unlock();
      sent = false;
      return true;
    }
    return false;
  }
  void fire() override {
    if (!sent) sent = node.ok;
    callback(sent);
  }
  Channel<T>& channel;
  T value;
  F callback;
  bool sent = false;
};

struct DefaultCase {};
struct TimeoutCase {
  int64_t ns;
};

inline void collect(SelectCase** out, int& n, SelectOptions&, SelectCase& c) { out[n++] = &c; }
inline void collect(SelectCase**, int&, SelectOptions& o, DefaultCase) { o.has_default = true; }
inline void collect(SelectCase**, int&, SelectOptions& o, TimeoutCase t) { o.timeout_ns = t.ns; }

template <typename C>
inline constexpr bool kIsChannelCase = std::is_base_of_v<SelectCase, std::remove_cvref_t<C>>;

}  // namespace detail

template <typename T, typename F>
detail::RecvCase<T, F> recv_case(Channel<T>& ch, F on_value) {
  return detail::RecvCase<T, F>(ch, std::move(on_value));
}

template <typename T, typename F>
detail::SendCase<T, F> send_case(Channel<T>& ch, T value, F on_done) {
  return detail::SendCase<T, F>(ch, std::move(value), std::move(on_done));
}

inline detail::DefaultCase default_case() { return {}; }

template <typename Rep, typename Period>
detail::TimeoutCase timeout(std::chrono::duration<Rep, Period> d) {
  auto ns = std::chrono::duration_cast<std::chrono::nanoseconds>(d).count();
  return {ns < 0 ? 0 : static_cast<int64_t>(ns)};
}

template <typename... Cases>
int select(Cases&&... cases) {
  constexpr int kChannelCases = (0 + ... + (detail::kIsChannelCase<Cases> ? 1 : 0));
  static_assert(kChannelCases <= kMaxSelectCases,
                "green::select: more than kMaxSelectCases (64) channel cases");
  detail::SelectCase* list[kChannelCases + 1];
  int n = 0;
  detail::SelectOptions options;
  (detail::collect(list, n, options, cases), ...);
  return detail::select_cases(list, n, options);
}

}  // namespace green
