#include "teduh/core/row_sum.h"

#include <sqlite3.h>

#include <array>
#include <cstdint>
#include <cstring>
#include <string>

#include "teduh/crypto/crypto.h"

namespace teduh::core {
namespace {

// The columns' encoding is gathered in one buffer (per thread, reused) and
// hashed in one call: one BLAKE2b init per row, not an update per column.
// The digest is the same as hashing the parts one after another.
class RowSummer {
 public:
  RowSummer() : buf_(Buffer()) { buf_.clear(); }
  void Add(int type, std::int64_t integer, const void* bytes, int n) {
    std::uint8_t head[9] = {static_cast<std::uint8_t>(type)};
    int head_len = 1;
    if (type == SQLITE_INTEGER || type == SQLITE_FLOAT) {
      for (int i = 0; i < 8; ++i) head[1 + i] = static_cast<std::uint8_t>(integer >> (56 - 8 * i));
      head_len = 9;
    } else if (type == SQLITE_TEXT || type == SQLITE_BLOB) {
      for (int i = 0; i < 4; ++i) head[1 + i] = static_cast<std::uint8_t>(n >> (24 - 8 * i));
      head_len = 5;
    }
    buf_.append(reinterpret_cast<const char*>(head), static_cast<std::size_t>(head_len));
    if (n > 0) buf_.append(static_cast<const char*>(bytes), static_cast<std::size_t>(n));
  }
  std::array<std::uint8_t, 32> Final() {
    auto digest = crypto::Hash(
        crypto::ByteView(reinterpret_cast<const std::uint8_t*>(buf_.data()), buf_.size()));
    if (buf_.capacity() > kKeptBytes)
      std::string().swap(buf_);  // a large value's room is given back
    return digest;
  }

 private:
  static constexpr std::size_t kKeptBytes = 256 * 1024;
  static std::string& Buffer() {
    thread_local std::string buffer;
    return buffer;
  }
  std::string& buf_;
};

std::int64_t FloatBits(double d) {
  std::int64_t bits;
  std::memcpy(&bits, &d, sizeof bits);
  return bits;
}

void RowSumFunction(sqlite3_context* ctx, int argc, sqlite3_value** argv) {
  RowSummer sum;
  for (int i = 0; i < argc; ++i) {
    sqlite3_value* v = argv[i];
    const int type = sqlite3_value_type(v);
    switch (type) {
      case SQLITE_INTEGER:
        sum.Add(type, sqlite3_value_int64(v), nullptr, 0);
        break;
      case SQLITE_FLOAT:
        sum.Add(type, FloatBits(sqlite3_value_double(v)), nullptr, 0);
        break;
      case SQLITE_TEXT:
        sum.Add(type, 0, sqlite3_value_text(v), sqlite3_value_bytes(v));
        break;
      case SQLITE_BLOB:
        sum.Add(type, 0, sqlite3_value_blob(v), sqlite3_value_bytes(v));
        break;
      default:
        sum.Add(type, 0, nullptr, 0);
    }
  }
  auto digest = sum.Final();
  sqlite3_result_blob(ctx, digest.data(), kRowSumBytes, SQLITE_TRANSIENT);
}

}  // namespace

int RegisterRowSum(sqlite3* db) {
  return sqlite3_create_function_v2(db, "row_sum", -1,
                                    SQLITE_UTF8 | SQLITE_DETERMINISTIC | SQLITE_INNOCUOUS, nullptr,
                                    &RowSumFunction, nullptr, nullptr, nullptr);
}

bool RowSumMatches(sqlite3_stmt* s, std::initializer_list<int> cols, int sum_col) {
  RowSummer sum;
  for (int c : cols) {
    const int type = sqlite3_column_type(s, c);
    switch (type) {
      case SQLITE_INTEGER:
        sum.Add(type, sqlite3_column_int64(s, c), nullptr, 0);
        break;
      case SQLITE_FLOAT:
        sum.Add(type, FloatBits(sqlite3_column_double(s, c)), nullptr, 0);
        break;
      case SQLITE_TEXT: {
        const unsigned char* p = sqlite3_column_text(s, c);
        sum.Add(type, 0, p, sqlite3_column_bytes(s, c));
        break;
      }
      case SQLITE_BLOB: {
        const void* p = sqlite3_column_blob(s, c);
        sum.Add(type, 0, p, sqlite3_column_bytes(s, c));
        break;
      }
      default:
        sum.Add(type, 0, nullptr, 0);
    }
  }
  auto digest = sum.Final();
  const void* stored = sqlite3_column_blob(s, sum_col);
  return sqlite3_column_bytes(s, sum_col) == kRowSumBytes && stored != nullptr &&
         std::memcmp(stored, digest.data(), kRowSumBytes) == 0;
}

}  // namespace teduh::core
