// Row checksums for the SQLite stores of the server and the devices.
//
// A table that must not serve a damaged row carries `sum`, a stored generated
// column `row_sum(col, col, ...)` over the row's content columns: SQLite
// computes it whenever a row is written, by whatever statement, so no write
// path can forget it. A read recomputes it from the values it got
// (RowSumMatches); a row whose sum differs is damaged and is never returned
// as data. This catches what SQLite's own checks cannot: a flipped byte inside
// a value, a stamp or an id, which leaves the b-tree valid.
//
// row_sum is BLAKE2b-256, truncated to kRowSumBytes, over each argument as a
// type byte and its bytes (an integer or float as 8 bytes big-endian, text and
// blobs after a 4-byte big-endian length, NULL as its type byte alone). It is
// a checksum against damage, not a MAC: whoever can write the file can also
// recompute it.
#pragma once

#include <initializer_list>

struct sqlite3;
struct sqlite3_stmt;

namespace teduh::core {

inline constexpr int kRowSumBytes = 16;

// Registers row_sum() on a connection. Every connection must, before it reads
// or writes a table that uses it. Returns an SQLite result code.
int RegisterRowSum(sqlite3* db);

// Whether column `sum_col` of the statement's current row holds row_sum() of
// columns `cols` (in the order the table's definition gives them), as read.
bool RowSumMatches(sqlite3_stmt* stmt, std::initializer_list<int> cols, int sum_col);

}  // namespace teduh::core
