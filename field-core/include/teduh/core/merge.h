// The merge decision for one incoming change to one field (ARCHITECTURE §2.3):
// a pure, deterministic function of the field's policy, its current value and
// stamp, the change's base stamp and the incoming value and stamp. The server
// applies it (and the test server of the device suite runs the same code).
//
//   base == current (or no current value)  → apply: the writer saw the latest value;
//   otherwise, by the field's rule:
//     LWW        higher stamp wins;
//     MAX        higher rank wins (enum rank option, else the number; ints by value),
//                equal values by stamp;
//     STAGE      the further stage (by rank) wins, equal stages by stamp;
//     UNION      the set union of both (add wins: a value removed on one side and
//                kept or added on the other stays), a new value (kCombine);
//     REVIEW     higher stamp provisionally, and `conflict` is set: the loser
//                waits for a person in the conflict queue;
//     IMMUTABLE  and append-only records: the change is rejected ("immutable").
// A fast-forward edit may lower a MAX or STAGE value: that is a decision, not
// a concurrent accident. Sealed fields only take LWW or REVIEW (the schema
// refuses anything else): their values are never read here.
//
// Thread safety: stateless.
#pragma once

#include <optional>
#include <string>
#include <string_view>

#include "teduh/core/hlc.h"
#include "teduh/core/schema.h"

namespace teduh::core {

enum class MergeAction {
  kApply,    // the incoming value becomes current (the old one goes to history)
  kKeep,     // the current value stays (the incoming one goes to history)
  kCombine,  // a new value (`combined`) becomes current; both go to history
  kReject,   // the change is refused; `reason` says why
};

struct MergeDecision {
  MergeAction action = MergeAction::kApply;
  bool concurrent = false;  // base differed from current
  bool conflict = false;    // REVIEW: a person must confirm the outcome
  std::string reason;       // kReject: a stable code ("immutable")
  std::string combined;     // kCombine: the single-field serialization of the result
};

// A field value as the merge sees it: its stamp and, for open fields, its
// single-field serialization (ignored for sealed fields).
struct MergeValue {
  Stamp stamp;
  std::string_view value;
};

// `field` may be null for a field unknown to this program (treated as LWW).
// A value that does not decode under MAX/STAGE/UNION is decided by LWW.
MergeDecision DecideMerge(const RecordKind* kind, const FieldPolicy* field,
                          const std::optional<MergeValue>& current,
                          const std::optional<Stamp>& base, const MergeValue& incoming);

// The rank MAX and STAGE compare: an enum value's (teduh.rank) option, else its
// number; an integer's value. nullopt for other types or an undecodable value.
std::optional<std::int64_t> MergeRank(const RecordKind& kind, const FieldPolicy& field,
                                      std::string_view value);

}  // namespace teduh::core
