// The type-independent half of channels: wait queues, close, parking. See channel.h.
#include "runtime/channel.h"

namespace green::detail {

void ChanQueue::push(ChanNode* n) {
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

void ChanQueue::remove(ChanNode* n) {
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

ChanNode* ChanQueue::pop_claimed() {
  while (ChanNode* n = head_) {
    remove(n);
    // A node whose waiter was claimed elsewhere (another select case, a timeout) is dropped:
    // its owner unlinks its other nodes itself.
    if (n->waiter->try_claim(n->index)) return n;
  }
  return nullptr;
}

ChanNode* ChannelCore::close_locked() {
  closed = true;
  ChanNode* chain = nullptr;
  for (ChanQueue* q : {&receivers, &senders}) {
    while (ChanNode* n = q->pop_claimed()) {
      n->ok = false;
      n->next = chain;
      chain = n;
    }
  }
  return chain;
}

void ChannelCore::wake_all(ChanNode* chain) {
  while (chain != nullptr) {
    ChanNode* next = chain->next;  // read before unpark: the node lives on the woken stack
    unpark(*chain->waiter);
    chain = next;
  }
}

void ChannelCore::park_in(ChanQueue& queue, SpinLock& lock, ChanNode& node, WaitReason reason) {
  queue.push(&node);
  park(*node.waiter, reason, unlock_spin_lock, &lock);
}

}  // namespace green::detail
