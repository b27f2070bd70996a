// The type-independent half of channels: close and parking. See channel.h.
#include "green/channel.h"

namespace green::detail {

ChanNode* ChannelCore::close_locked() {
  closed = true;
  ChanNode* chain = receivers.claim_all();
  ChanNode* senders_chain = senders.claim_all();
  // ok stays false for all of them: nothing was transferred. Join the two chains.
  ChanNode** tail = &chain;
  while (*tail != nullptr) tail = &(*tail)->next;
  *tail = senders_chain;
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
  park_and_unlock(*node.waiter, reason, lock);
}

}  // namespace green::detail
