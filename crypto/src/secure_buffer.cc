// SecureBuffer and the helpers that compare or erase secret bytes.
//
// Invariants:
//   1. data_ == nullptr  <=>  size_ == 0. An empty buffer owns nothing.
//   2. A non-null data_ came from sodium_malloc(size_) and is released only by
//      sodium_free, which wipes the bytes before unmapping them.
//   3. A moved-from buffer is empty, so its destructor frees nothing.
#include <sodium.h>

#include <cassert>
#include <cstring>
#include <string>
#include <utility>

#include "teduh/crypto/crypto.h"

namespace teduh::crypto {

SecureBuffer::~SecureBuffer() { Reset(); }

SecureBuffer::SecureBuffer(SecureBuffer&& other) noexcept
    : data_(std::exchange(other.data_, nullptr)), size_(std::exchange(other.size_, 0)) {}

SecureBuffer& SecureBuffer::operator=(SecureBuffer&& other) noexcept {
  if (this != &other) {
    Reset();
    data_ = std::exchange(other.data_, nullptr);
    size_ = std::exchange(other.size_, 0);
  }
  return *this;
}

result<SecureBuffer> SecureBuffer::Allocate(std::size_t size) noexcept {
  SecureBuffer buffer;
  if (size == 0) return buffer;
  void* memory = sodium_malloc(size);
  if (memory == nullptr) return errc::out_of_memory;
  // sodium_malloc fills new memory with a canary byte to expose reads of
  // uninitialised memory; the contract here is a zero-filled buffer.
  std::memset(memory, 0, size);
  buffer.data_ = static_cast<std::uint8_t*>(memory);
  buffer.size_ = size;
  return buffer;
}

result<SecureBuffer> SecureBuffer::CopyOf(ByteView bytes) noexcept {
  auto buffer = Allocate(bytes.size());
  if (!buffer) return buffer.error();
  if (!bytes.empty()) std::memcpy(buffer->data(), bytes.data(), bytes.size());
  return buffer;
}

result<SecureBuffer> SecureBuffer::Clone() const noexcept { return CopyOf(view()); }

void SecureBuffer::Reset() noexcept {
  assert((data_ == nullptr) == (size_ == 0));
  if (data_ != nullptr) sodium_free(data_);  // wipes before freeing
  data_ = nullptr;
  size_ = 0;
}

void Wipe(std::span<std::uint8_t> bytes) noexcept {
  if (!bytes.empty()) sodium_memzero(bytes.data(), bytes.size());
}

void Wipe(std::string& s) noexcept {
  // Earlier, longer contents may survive past size() in the same allocation,
  // so wipe the whole capacity. Growing to capacity() never reallocates.
  s.resize(s.capacity());
  sodium_memzero(s.data(), s.size());
  s.clear();
}

bool ConstantTimeEqual(ByteView a, ByteView b) noexcept {
  // Lengths are public; only the contents are compared in constant time.
  if (a.size() != b.size()) return false;
  if (a.empty()) return true;
  return sodium_memcmp(a.data(), b.data(), a.size()) == 0;
}

}  // namespace teduh::crypto
