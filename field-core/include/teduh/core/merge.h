// The merge decision for one incoming change to one field (ARCHITECTURE §2.3):
// a pure, deterministic function of the field's policy, its current value and
// stamp, the change's base stamp and the incoming value and stamp. The server
// applies it (and the test server of the device suite runs the same code).
//
//   base == current (or no current value)  → apply: the writer saw the latest value
//     (also when the base is the writer's own stamp of a value the server
//     re-stamped: a device whose clock ran ahead edits its own change again);
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
// a concurrent accident. Sealed fields only take LWW or REVIEW (a schema test
// holds every sealed field to that); their values are never read here: they
// are decided by stamp alone.
//
// Thread safety: stateless.
#pragma once

#include <cstdint>
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
// single-field serialization (ignored for sealed fields). `origin_hlc`: the
// writer's own HLC when the server re-stamped the value (its clock ran
// beyond the allowed skew), else 0.
struct MergeValue {
  Stamp stamp;
  std::string_view value;
  std::uint64_t origin_hlc = 0;
};

// `field` may be null for a field unknown to this program (treated as LWW).
// A value that does not decode under MAX/STAGE/UNION is decided by LWW.
MergeDecision DecideMerge(const RecordKind* kind, const FieldPolicy* field,
                          const std::optional<MergeValue>& current,
                          const std::optional<Stamp>& base, const MergeValue& incoming);

// A reopened case's episode as the server holds it: the stamp of its
// `episode` value and the server sequence that value was applied at.
struct EpisodeMark {
  Stamp stamp;
  std::uint64_t seq = 0;
};

// Episodes first, for a concurrent change of a per-episode field
// (FieldPolicy::per_episode: stage, closure) of a reopened case. The current
// value is of an episode the case has left if it was applied before the
// episode (`current_seq` below episode.seq). The incoming one is of the
// current episode if its writer had seen the episode: it wrote the episode
// itself (same device, later HLC: the reopening's own stage and clearing
// edits) or its base is above the episode's stamp (it edited over a value
// written since). When exactly one side is of the current episode it wins
// (kApply or kKeep) whatever the field's rule; else nullopt: the rule decides.
// Deterministic: a function of server state and the change only (re-
// sequencing a case on reassignment keeps its values' order, so seqs compare). A writer
// whose clock ran ahead may pass for one that saw the episode (its base is
// compared by stamp); the loser is in history either way.
std::optional<MergeAction> EpisodeOrder(const EpisodeMark& episode, std::uint64_t current_seq,
                                        const std::optional<Stamp>& base, const Stamp& incoming);

// The rank MAX and STAGE compare: an enum value's (teduh.rank) option, else its
// number; an integer's value. nullopt for other types or an undecodable value.
std::optional<std::int64_t> MergeRank(const RecordKind& kind, const FieldPolicy& field,
                                      std::string_view value);

}  // namespace teduh::core
