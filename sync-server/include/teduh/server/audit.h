// The server's audit log: an append-only hash chain of entries
// (teduh.audit.v1.AuditEntry, proto/teduh/audit/v1/audit.proto), one per
// accepted Push frame, enrollment and approval, written in the same store
// transaction as the changes it describes. Entries hold ids, stamps, devices,
// users and outcomes, never a field value (docs/SECURITY.md, "Audit log").
//
// Chain (docs/PROTOCOL.md §11): entry i (from 1) is stored as its body (the
// AuditEntry serialization, whose `index` is i), the previous entry's hash and
//   hash_i = BLAKE2b-256("teduh-audit-v1" || hash_{i-1} || u64be(i) || body),
// hash_0 = 32 zero bytes. The store also records the head (i, hash_i) with
// every commit, so removing entries from the end is detected too.
//
// What the chain proves: that entries were neither altered, removed,
// reordered nor inserted after they were written — unless the whole chain
// from that point on, and the recorded head, were rewritten. Anyone who can
// write the store file can do that; a head hash recorded elsewhere (printed
// by `teduh-server audit verify`) and checked later with CheckAuditChain's
// `known_head` catches it.
//
// Thread safety: stateless functions; each uses only the Store it is given
// (which is not thread-safe itself, see store.h).
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

#include "teduh/audit/v1/audit.pb.h"
#include "teduh/core/error.h"
#include "teduh/server/store.h"

namespace teduh::server {

inline constexpr std::string_view kAuditDomain = "teduh-audit-v1";

// hash_i of the comment above. `prev_hash` is hash_{i-1} as stored (32 B).
AuditHash AuditChainHash(std::string_view prev_hash, std::uint64_t index, std::string_view body);

// Appends `entry` as the next entry of the chain inside the store's current
// (write) transaction: sets entry->index, then writes it. Returns the store's
// error; the entry is durable only if the transaction commits.
[[nodiscard]] core::error_code AppendAuditEntry(Store& store, teduh::audit::v1::AuditEntry* entry);

// Undoes the compact encoding of audit.proto in place: gives every stamp of a
// change its device id and every change its record kind.
void ExpandAuditEntry(teduh::audit::v1::AuditEntry* entry);

// What is wrong with a chain, for the first bad entry found.
enum class AuditProblem {
  kNone,
  kMissing,            // an index is skipped: that entry was removed
  kOutOfOrder,         // the entry holds another index's body: entries were moved
  kAltered,            // the entry's hash does not match its content
  kBrokenLink,         // the entry does not chain to the one before it
  kUnreadable,         // the body does not parse as an AuditEntry
  kTruncated,          // entries at the end were removed (the recorded head is further)
  kHeadMismatch,       // the entry at the recorded head's index is another one
  kKnownHeadNotFound,  // a head recorded earlier is not in the chain: it was rewritten
};
std::string_view AuditProblemName(AuditProblem problem);  // "altered", "missing", …

struct AuditCheck {
  std::uint64_t entries = 0;  // entries checked and found intact
  AuditHash head{};           // hash of the last intact entry (zeros if none)
  AuditProblem problem = AuditProblem::kNone;
  std::uint64_t bad_index = 0;  // the first bad (or first missing) entry; 0 if none
  std::string detail;           // one sentence for the admin, naming bad_index
  bool intact() const { return problem == AuditProblem::kNone; }
};

// Walks the whole chain of `store` in index order and stops at the first
// problem: every index from 1 present, every hash recomputed, every link
// checked, every body parsed with its own index, and the head recorded by the
// last commit present in the chain. Entries after that head (a live server
// appending meanwhile) are checked like the others. With `known_head`, also
// requires an entry with that hash (a head printed earlier). A broken chain is
// a successful call with !intact(); an error means the store could not be
// read. Safe beside a live server on another connection.
[[nodiscard]] core::result<AuditCheck> CheckAuditChain(
    Store& store, const std::optional<AuditHash>& known_head = std::nullopt);

}  // namespace teduh::server
