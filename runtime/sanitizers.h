// Which sanitizer this translation unit is built with: GREEN_ASAN and GREEN_TSAN. GCC defines
// __SANITIZE_ADDRESS__ and __SANITIZE_THREAD__ under -fsanitize; clang 14 does not (it answers
// __has_feature instead), so the runtime tests these two macros, never the compilers' own. With
// clang the fiber annotations were silently off: ASan then took a recycled green-thread stack
// for an overflow (found by the client's response fuzzer, built with clang).
#pragma once

#if defined(__SANITIZE_ADDRESS__)
#define GREEN_ASAN 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define GREEN_ASAN 1
#endif
#endif

#if defined(__SANITIZE_THREAD__)
#define GREEN_TSAN 1
#elif defined(__has_feature)
#if __has_feature(thread_sanitizer)
#define GREEN_TSAN 1
#endif
#endif
