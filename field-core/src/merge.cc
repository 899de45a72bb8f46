#include "teduh/core/merge.h"

namespace teduh::core {

MergeDecision DecideMerge(const RecordKind* kind, const FieldPolicy* field,
                          const std::optional<Stamp>& current, const std::optional<Stamp>& base,
                          const Stamp& incoming) {
  MergeDecision d;
  if (!current) return d;  // first value of the field
  if (kind && kind->append_only) {
    d.action = MergeAction::kReject;
    d.reason = "immutable";
    return d;
  }
  if (field && field->merge == teduh::MERGE_RULE_IMMUTABLE) {
    d.action = MergeAction::kReject;
    d.reason = "immutable";
    return d;
  }
  if (base && *base == *current) return d;  // fast-forward: the writer saw the latest value
  d.concurrent = true;
  // Concurrent edit. LWW decides for every rule until the value-aware rules land.
  d.action = incoming > *current ? MergeAction::kApply : MergeAction::kKeep;
  return d;
}

}  // namespace teduh::core
