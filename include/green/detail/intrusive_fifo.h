// IntrusiveFifo: the wait queue of every blocking primitive. Nodes live on the waiters' own
// stacks and carry `next`, `prev` and `queued`; the queue is guarded by its owner's lock.
//
// pop_claimed() skips nodes whose waiter was already claimed by someone else (a timeout,
// another select case): that waiter unlinks its other nodes itself. A node type says how it is
// claimed with a `claim(Node*)` overload found by argument-dependent lookup.
#pragma once

namespace green::detail {

template <typename Node>
class IntrusiveFifo {
 public:
  void push(Node* n) {
    n->next = nullptr;
    n->prev = tail_;
    if (tail_ != nullptr) {
      tail_->next = n;
    } else {
      head_ = n;
    }
    tail_ = n;
    n->queued = true;
  }

  // No-op if n is not queued (already popped by a waker).
  void remove(Node* n) {
    if (!n->queued) return;
    if (n->prev != nullptr) {
      n->prev->next = n->next;
    } else {
      head_ = n->next;
    }
    if (n->next != nullptr) {
      n->next->prev = n->prev;
    } else {
      tail_ = n->prev;
    }
    n->next = n->prev = nullptr;
    n->queued = false;
  }

  // Pops nodes until one is claimed for the caller; returns it, or null.
  Node* pop_claimed() {
    while (Node* n = head_) {
      remove(n);
      if (claim(n)) return n;
    }
    return nullptr;
  }

  // Claims every node; returns them chained through `next` (for waking after unlocking).
  Node* claim_all() {
    Node* chain = nullptr;
    while (Node* n = pop_claimed()) {
      n->next = chain;
      chain = n;
    }
    return chain;
  }

  bool empty() const { return head_ == nullptr; }

 private:
  Node* head_ = nullptr;
  Node* tail_ = nullptr;
};

}  // namespace green::detail
