// Clang's thread-safety analysis (-Wthread-safety) as macros: a lock type is a capability, a
// field names the lock that guards it, a function the locks it needs, takes or releases. The
// compiler then checks every access in the runtime and the server (the clang build of `make
// test` turns its warnings into errors). GCC has no such analysis: there the macros are empty.
//
// The names follow Clang's documentation (and Abseil's macros), so that its examples apply:
// https://clang.llvm.org/docs/ThreadSafetyAnalysis.html
#pragma once

#if defined(__clang__) && !defined(SWIG)
#define GREEN_TSA(x) __attribute__((x))
#else
#define GREEN_TSA(x)
#endif

// On a class: its objects are locks ("mutex" in the analysis' messages).
#define GREEN_CAPABILITY(name) GREEN_TSA(capability(name))
// On an RAII class whose constructor acquires and destructor releases a capability.
#define GREEN_SCOPED_CAPABILITY GREEN_TSA(scoped_lockable)
// On a field: reads and writes need the lock held.
#define GREEN_GUARDED_BY(x) GREEN_TSA(guarded_by(x))
// On a pointer field: what it points to needs the lock held.
#define GREEN_PT_GUARDED_BY(x) GREEN_TSA(pt_guarded_by(x))
// On a function: the caller must hold the lock(s) (the *_locked functions).
#define GREEN_REQUIRES(...) GREEN_TSA(requires_capability(__VA_ARGS__))
// On a function: it takes the lock(s) and returns holding them.
#define GREEN_ACQUIRE(...) GREEN_TSA(acquire_capability(__VA_ARGS__))
// On a function: it releases the lock(s) the caller held.
#define GREEN_RELEASE(...) GREEN_TSA(release_capability(__VA_ARGS__))
// On a function: returns `result` when it took the lock.
#define GREEN_TRY_ACQUIRE(...) GREEN_TSA(try_acquire_capability(__VA_ARGS__))
// On a function: the caller must not hold the lock(s) (it takes them itself).
#define GREEN_EXCLUDES(...) GREEN_TSA(locks_excluded(__VA_ARGS__))
// On a function: asserts (to the analysis) that the lock is held when it returns.
#define GREEN_ASSERT_CAPABILITY(x) GREEN_TSA(assert_capability(x))
// On a function returning a reference to a lock: which lock it is.
#define GREEN_RETURN_CAPABILITY(x) GREEN_TSA(lock_returned(x))
// On a function the analysis cannot follow: a lock handed across a context switch (park's
// commit), released on a condition, or taken in a loop over a set. Each use says why.
#define GREEN_NO_THREAD_SAFETY_ANALYSIS GREEN_TSA(no_thread_safety_analysis)
