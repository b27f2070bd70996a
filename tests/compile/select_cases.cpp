// Compiled, never linked, by the Select.*Compile* tests (tests/CMakeLists.txt): a select() over
// GREEN_SELECT_CASES channel cases. kMaxSelectCases of them compile; one more must not.
#include <cstddef>
#include <optional>
#include <utility>

#include "green/select.h"

template <std::size_t... I>
int select_over(green::Channel<int>& channel, std::index_sequence<I...>) {
  return green::select(((void)I, green::recv_case(channel, [](std::optional<int>) {}))...,
                       green::default_case());
}

int select_many(green::Channel<int>& channel) {
  return select_over(channel, std::make_index_sequence<GREEN_SELECT_CASES>());
}
