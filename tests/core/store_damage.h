// Damage to a store file (a device's or the server's), for tests: a statement run behind the row
// checksums' back, as a flipped bit would change a row. It runs on a
// connection of its own whose row_sum() returns zeros, so every row it writes
// carries a checksum that does not match (core/row_sum.h).
#pragma once

#include <gtest/gtest.h>
#include <sqlite3.h>

#include <filesystem>
#include <fstream>
#include <iterator>
#include <string>
#include <string_view>

namespace teduh::store_damage {

inline void DamageRows(const std::filesystem::path& store, const std::string& sql) {
  sqlite3* db = nullptr;
  ASSERT_EQ(sqlite3_open_v2(store.c_str(), &db, SQLITE_OPEN_READWRITE, nullptr), SQLITE_OK);
  auto zeros = [](sqlite3_context* ctx, int, sqlite3_value**) { sqlite3_result_zeroblob(ctx, 16); };
  ASSERT_EQ(sqlite3_create_function_v2(db, "row_sum", -1, SQLITE_UTF8 | SQLITE_DETERMINISTIC,
                                       nullptr, zeros, nullptr, nullptr, nullptr),
            SQLITE_OK);
  char* err = nullptr;
  const int rc = sqlite3_exec(db, sql.c_str(), nullptr, nullptr, &err);
  EXPECT_EQ(rc, SQLITE_OK) << (err ? err : "") << " in " << sql;
  sqlite3_free(err);
  EXPECT_GT(sqlite3_changes(db), 0) << "nothing damaged by " << sql;
  sqlite3_close(db);
}

inline std::string ReadFile(const std::filesystem::path& path) {
  std::ifstream in(path, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(in), {});
}

inline void WriteFile(const std::filesystem::path& path, const std::string& bytes) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
}

// Changes one byte in the middle of the only occurrence of `needle` in a
// store file (every connection closed, so the file holds everything). The
// row keeps the checksum it had: what a flipped bit on a disk does.
inline void DamageBytesOf(const std::filesystem::path& path, std::string_view needle) {
  std::string file = ReadFile(path);
  const auto at = file.find(needle);
  ASSERT_NE(at, std::string::npos) << needle;
  ASSERT_EQ(file.find(needle, at + 1), std::string::npos) << "more than one " << needle;
  file[at + needle.size() / 2] ^= 0x01;
  WriteFile(path, file);
}

// Makes the first byte of the b-tree page of `name` (a table or index)
// invalid: the file's structure is damaged.
inline void DamagePageOf(const std::filesystem::path& store, const std::string& name) {
  sqlite3* db = nullptr;
  ASSERT_EQ(sqlite3_open_v2(store.c_str(), &db, SQLITE_OPEN_READONLY, nullptr), SQLITE_OK);
  sqlite3_stmt* s = nullptr;
  ASSERT_EQ(
      sqlite3_prepare_v2(db, "SELECT rootpage FROM sqlite_master WHERE name = ?1", -1, &s, nullptr),
      SQLITE_OK);
  sqlite3_bind_text(s, 1, name.c_str(), -1, SQLITE_TRANSIENT);
  ASSERT_EQ(sqlite3_step(s), SQLITE_ROW);
  const std::int64_t page = sqlite3_column_int64(s, 0);
  sqlite3_finalize(s);
  ASSERT_EQ(sqlite3_prepare_v2(db, "PRAGMA page_size", -1, &s, nullptr), SQLITE_OK);
  ASSERT_EQ(sqlite3_step(s), SQLITE_ROW);
  const std::int64_t size = sqlite3_column_int64(s, 0);
  sqlite3_finalize(s);
  sqlite3_close(db);
  std::string file = ReadFile(store);
  ASSERT_GT(static_cast<std::int64_t>(file.size()), (page - 1) * size);
  file[(page - 1) * size] = static_cast<char>(0xFF);
  WriteFile(store, file);
}

// Runs `sql` with the real checksums: a row rewritten consistently (its sum
// matches) whose encrypted content no longer opens.
inline void RewriteRows(const std::filesystem::path& store, const std::string& sql,
                        int (*register_row_sum)(sqlite3*)) {
  sqlite3* db = nullptr;
  ASSERT_EQ(sqlite3_open_v2(store.c_str(), &db, SQLITE_OPEN_READWRITE, nullptr), SQLITE_OK);
  ASSERT_EQ(register_row_sum(db), SQLITE_OK);
  char* err = nullptr;
  const int rc = sqlite3_exec(db, sql.c_str(), nullptr, nullptr, &err);
  EXPECT_EQ(rc, SQLITE_OK) << (err ? err : "") << " in " << sql;
  sqlite3_free(err);
  sqlite3_close(db);
}

}  // namespace teduh::store_damage
