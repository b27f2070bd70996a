// ByteBuffer: a growable run of bytes for building responses. Appends are the hot path of
// every response (status line, headers, body), so it is a plain pointer/size/capacity triple
// with inline appends; it grows by doubling and keeps its capacity across clear(), which is
// what lets a pooled buffer serve request after request without touching the allocator.
//
// Not thread-safe: one owner at a time (a connection, or the buffer pool between owners).
#pragma once

#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <new>
#include <string_view>
#include <utility>

namespace green::http {

class ByteBuffer {
 public:
  ByteBuffer() = default;
  ~ByteBuffer() { std::free(data_); }
  ByteBuffer(ByteBuffer&& other) noexcept
      : data_(std::exchange(other.data_, nullptr)),
        size_(std::exchange(other.size_, 0)),
        capacity_(std::exchange(other.capacity_, 0)) {}
  ByteBuffer& operator=(ByteBuffer&& other) noexcept {
    if (this != &other) {
      std::free(data_);
      data_ = std::exchange(other.data_, nullptr);
      size_ = std::exchange(other.size_, 0);
      capacity_ = std::exchange(other.capacity_, 0);
    }
    return *this;
  }
  ByteBuffer(const ByteBuffer&) = delete;
  ByteBuffer& operator=(const ByteBuffer&) = delete;

  char* data() { return data_; }
  const char* data() const { return data_; }
  std::size_t size() const { return size_; }
  std::size_t capacity() const { return capacity_; }
  bool empty() const { return size_ == 0; }
  std::string_view view() const { return {data_, size_}; }
  void clear() { size_ = 0; }
  // Drops everything after the first n bytes.
  void truncate(std::size_t n) {
    if (n < size_) size_ = n;
  }

  void reserve(std::size_t n) {
    if (n > capacity_) grow(n);
  }
  // The capacity a buffer of capacity `capacity` has after growing to hold `need` bytes (what
  // it will cost, for callers that must reserve memory before an append).
  static std::size_t capacity_for(std::size_t capacity, std::size_t need) {
    if (need <= capacity) return capacity;
    std::size_t cap = capacity < 256 ? 256 : capacity;
    while (cap < need) cap *= 2;
    return cap;
  }
  // Frees the memory when the capacity is over `max` (a pooled buffer that served one huge
  // response should not keep that memory forever).
  void shrink_if_over(std::size_t max) {
    if (capacity_ > max) {
      std::free(data_);
      data_ = nullptr;
      size_ = capacity_ = 0;
    }
  }

  void append(std::string_view s) {
    if (size_ + s.size() > capacity_) grow(size_ + s.size());
    if (!s.empty()) std::memcpy(data_ + size_, s.data(), s.size());
    size_ += s.size();
  }
  // Makes room for n more bytes and counts them in: the caller fills [result, result + n)
  // (a read straight into the buffer), then truncate()s off what it did not fill.
  char* extend(std::size_t n) {
    if (size_ + n > capacity_) grow(size_ + n);
    char* at = data_ + size_;
    size_ += n;
    return at;
  }
  void push_back(char c) {
    if (size_ == capacity_) grow(size_ + 1);
    data_[size_++] = c;
  }
  void append_decimal(uint64_t v) {
    char tmp[20];
    int n = 0;
    do {
      tmp[n++] = static_cast<char>('0' + v % 10);
      v /= 10;
    } while (v != 0);
    reserve(size_ + static_cast<std::size_t>(n));
    while (n > 0) data_[size_++] = tmp[--n];
  }

 private:
  void grow(std::size_t need) {
    const std::size_t cap = capacity_for(capacity_, need);
    void* p = std::realloc(data_, cap);
    if (p == nullptr) throw std::bad_alloc();
    data_ = static_cast<char*>(p);
    capacity_ = cap;
  }

  char* data_ = nullptr;
  std::size_t size_ = 0;
  std::size_t capacity_ = 0;
};

}  // namespace green::http
