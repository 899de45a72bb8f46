// The audit chain's hash, its append, and its check (see audit.h).
#include "teduh/server/audit.h"

#include <fmt/format.h>

#include <cstring>

#include "teduh/core/i18n.h"
#include "teduh/core/ids.h"
#include "teduh/crypto/crypto.h"

namespace teduh::server {
namespace {

std::string_view View(const AuditHash& h) {
  return {reinterpret_cast<const char*>(h.data()), h.size()};
}

AuditCheck Broken(AuditCheck check, AuditProblem problem, std::uint64_t index, std::string detail) {
  check.problem = problem;
  check.bad_index = index;
  check.detail = std::move(detail);
  return check;
}

}  // namespace

AuditHash AuditChainHash(std::string_view prev_hash, std::uint64_t index, std::string_view body) {
  std::string buf;
  buf.reserve(kAuditDomain.size() + prev_hash.size() + 8 + body.size());
  buf.append(kAuditDomain);
  buf.append(prev_hash);
  for (int shift = 56; shift >= 0; shift -= 8) buf.push_back(static_cast<char>(index >> shift));
  buf.append(body);
  return crypto::Hash(core::AsSpan(buf));
}

core::error_code AppendAuditEntry(Store& store, teduh::audit::v1::AuditEntry* entry) {
  const AuditHead head = store.PendingAuditHead();
  const std::uint64_t index = head.index + 1;
  entry->set_index(index);
  std::string body;
  if (!entry->SerializeToString(&body)) return core::make_error_code(core::errc::store_failed);
  const AuditHash hash = AuditChainHash(View(head.hash), index, body);
  return store.AppendAudit(AuditRow{index, body, View(head.hash), View(hash)});
}

void ExpandAuditEntry(teduh::audit::v1::AuditEntry* entry) {
  const std::string& own = entry->device_id();
  auto fill = [&](teduh::sync::v1::Stamp* stamp) {
    if (stamp->device_id().empty()) stamp->set_device_id(own);
  };
  std::string kind;
  for (auto& c : *entry->mutable_changes()) {
    if (c.kind().empty())
      c.set_kind(kind);
    else
      kind = c.kind();
    if (c.has_stamp()) fill(c.mutable_stamp());
    if (c.has_stored()) fill(c.mutable_stored());
    if (c.has_current()) fill(c.mutable_current());
    if (c.has_base()) fill(c.mutable_base());
  }
}

std::string_view AuditProblemName(AuditProblem problem) {
  switch (problem) {
    case AuditProblem::kNone:
      return "intact";
    case AuditProblem::kMissing:
      return "missing";
    case AuditProblem::kOutOfOrder:
      return "out_of_order";
    case AuditProblem::kAltered:
      return "altered";
    case AuditProblem::kBrokenLink:
      return "broken_link";
    case AuditProblem::kUnreadable:
      return "unreadable";
    case AuditProblem::kTruncated:
      return "truncated";
    case AuditProblem::kHeadMismatch:
      return "head_mismatch";
    case AuditProblem::kKnownHeadNotFound:
      return "known_head_not_found";
  }
  return "unknown";
}

core::result<AuditCheck> CheckAuditChain(Store& store, const std::optional<AuditHash>& known_head) {
  // The head first: a live server only ever appends after it, so the scan
  // (one statement: one consistent snapshot) sees at least the entries the
  // head names, and any later ones must chain like the rest.
  auto recorded = store.RecordedAuditHead();
  if (!recorded) return recorded.error();
  AuditCheck check;
  std::optional<AuditCheck> broken;
  bool known_found = false;
  teduh::audit::v1::AuditEntry entry;
  auto visit = [&](const AuditRow& row) {
    const std::uint64_t expected = check.entries + 1;
    if (row.index != expected) {
      broken = Broken(
          check, AuditProblem::kMissing, expected,
          core::TrF("entry {} is missing (the next stored entry is {})", expected, row.index));
      return false;
    }
    const bool parsed = entry.ParseFromArray(row.body.data(), static_cast<int>(row.body.size()));
    const bool sizes_ok =
        row.hash.size() == check.head.size() && row.prev_hash.size() == check.head.size();
    const bool hash_ok =
        sizes_ok && View(AuditChainHash(row.prev_hash, row.index, row.body)) == row.hash;
    if (parsed && entry.index() != row.index) {
      broken = Broken(
          check, AuditProblem::kOutOfOrder, row.index,
          core::TrF("entry {} is out of order: it holds entry {}", row.index, entry.index()));
      return false;
    }
    if (!hash_ok) {
      // English whatever the language: scripts match it ("entry 2 was altered").
      broken = Broken(
          check, AuditProblem::kAltered, row.index,
          fmt::format("entry {} was altered: its hash does not match its content", row.index));
      return false;
    }
    if (!parsed) {
      broken = Broken(check, AuditProblem::kUnreadable, row.index,
                      core::TrF("entry {} is unreadable", row.index));
      return false;
    }
    if (row.prev_hash != View(check.head)) {
      broken = Broken(check, AuditProblem::kBrokenLink, row.index,
                      core::TrF("entry {} does not follow entry {}: the chain was replaced from "
                                "here on",
                                row.index, row.index - 1));
      return false;
    }
    if (row.index == recorded->index && row.hash != View(recorded->hash)) {
      broken =
          Broken(check, AuditProblem::kHeadMismatch, row.index,
                 core::TrF("entry {} is not the recorded head: the chain was replaced", row.index));
      return false;
    }
    check.entries = row.index;
    std::memcpy(check.head.data(), row.hash.data(), check.head.size());
    if (known_head && check.head == *known_head) known_found = true;
    return true;
  };
  if (auto ec = store.ScanAudit(0, visit)) return ec;
  if (broken) return *std::move(broken);

  if (recorded->index > check.entries) {
    const std::uint64_t first = check.entries + 1;
    return Broken(
        check, AuditProblem::kTruncated, first,
        first == recorded->index
            ? core::TrF("entry {} was removed from the end (it is the recorded head)", first)
            : core::TrF("entries {} to {} were removed from the end (the recorded "
                        "head is entry {})",
                        first, recorded->index, recorded->index));
  }
  const AuditHash zero{};
  if (known_head && !known_found && !(*known_head == zero && check.entries == 0)) {
    return Broken(check, AuditProblem::kKnownHeadNotFound, 0,
                  core::TrF("no entry has the recorded hash {}: the chain was rewritten",
                            core::ToHex(*known_head)));
  }
  return check;
}

}  // namespace teduh::server
