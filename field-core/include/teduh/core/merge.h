// The merge decision for one incoming change to one field (ARCHITECTURE §2.3):
// a pure, deterministic function of the field's policy, its current stamp,
// the change's base and its stamp. The server applies it; devices may run it
// to predict results. Issue #3 extends it with the value-aware rules (MAX,
// STAGE, UNION, REVIEW); today every mergeable field is decided by LWW, while
// IMMUTABLE fields and append-only records are enforced.
#pragma once

#include <optional>
#include <string>

#include "teduh/core/hlc.h"
#include "teduh/core/schema.h"

namespace teduh::core {

enum class MergeAction {
  kApply,   // the incoming value becomes current (the old one goes to history)
  kKeep,    // the current value stays (the incoming one goes to history)
  kReject,  // the change is refused; `reason` says why
};

struct MergeDecision {
  MergeAction action = MergeAction::kApply;
  bool concurrent = false;  // base differed from current
  std::string reason;       // kReject: a stable code ("immutable", "append_only")
};

// `field` may be null for a field unknown to this program (treated as LWW).
MergeDecision DecideMerge(const RecordKind* kind, const FieldPolicy* field,
                          const std::optional<Stamp>& current, const std::optional<Stamp>& base,
                          const Stamp& incoming);

}  // namespace teduh::core
