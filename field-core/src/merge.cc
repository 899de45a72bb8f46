#include "teduh/core/merge.h"

#include <google/protobuf/descriptor.h>
#include <google/protobuf/message.h>

#include <algorithm>
#include <vector>

namespace teduh::core {
namespace {

namespace gp = google::protobuf;

MergeAction ByStamp(const Stamp& current, const Stamp& incoming) {
  return incoming > current ? MergeAction::kApply : MergeAction::kKeep;
}

// The values of a repeated field as numbers (enums by number, ints by value)
// or bytes, in a form that sorts and compares.
std::optional<std::vector<std::string>> SetElements(const RecordKind& kind,
                                                    const FieldPolicy& field,
                                                    std::string_view value) {
  const gp::FieldDescriptor* fd = field.descriptor;
  if (fd == nullptr || !fd->is_repeated()) return std::nullopt;
  auto msg = DecodeFieldValue(kind, value);
  if (!msg) return std::nullopt;
  const gp::Reflection* r = (*msg)->GetReflection();
  std::vector<std::string> out;
  const int n = r->FieldSize(**msg, fd);
  for (int i = 0; i < n; ++i) {
    switch (fd->cpp_type()) {
      case gp::FieldDescriptor::CPPTYPE_ENUM:
        out.push_back(std::to_string(r->GetRepeatedEnumValue(**msg, fd, i)));
        break;
      case gp::FieldDescriptor::CPPTYPE_INT32:
        out.push_back(std::to_string(r->GetRepeatedInt32(**msg, fd, i)));
        break;
      case gp::FieldDescriptor::CPPTYPE_INT64:
        out.push_back(std::to_string(r->GetRepeatedInt64(**msg, fd, i)));
        break;
      case gp::FieldDescriptor::CPPTYPE_STRING:
        out.push_back(r->GetRepeatedString(**msg, fd, i));
        break;
      default:
        return std::nullopt;
    }
  }
  return out;
}

// The set union of two element lists (from SetElements) as a single-field
// serialization, in ascending order (by number, or by bytes for strings), so
// the union of A and B is the union of B and A.
std::string Union(const RecordKind& kind, const FieldPolicy& field, std::vector<std::string> a,
                  const std::vector<std::string>& b) {
  const gp::FieldDescriptor* fd = field.descriptor;
  const bool numeric = fd->cpp_type() != gp::FieldDescriptor::CPPTYPE_STRING;
  a.insert(a.end(), b.begin(), b.end());
  std::sort(a.begin(), a.end(), [&](const std::string& x, const std::string& y) {
    return numeric ? std::stoll(x) < std::stoll(y) : x < y;
  });
  a.erase(std::unique(a.begin(), a.end()), a.end());
  std::unique_ptr<gp::Message> out(
      gp::MessageFactory::generated_factory()->GetPrototype(kind.descriptor)->New());
  const gp::Reflection* r = out->GetReflection();
  for (const std::string& e : a) {
    switch (fd->cpp_type()) {
      case gp::FieldDescriptor::CPPTYPE_ENUM:
        r->AddEnumValue(out.get(), fd, static_cast<int>(std::stoll(e)));
        break;
      case gp::FieldDescriptor::CPPTYPE_INT32:
        r->AddInt32(out.get(), fd, static_cast<std::int32_t>(std::stoll(e)));
        break;
      case gp::FieldDescriptor::CPPTYPE_INT64:
        r->AddInt64(out.get(), fd, std::stoll(e));
        break;
      default:
        r->AddString(out.get(), fd, e);
        break;
    }
  }
  return out->SerializeAsString();
}

}  // namespace

std::optional<std::int64_t> MergeRank(const RecordKind& kind, const FieldPolicy& field,
                                      std::string_view value) {
  const gp::FieldDescriptor* fd = field.descriptor;
  if (fd == nullptr || fd->is_repeated()) return std::nullopt;
  auto msg = DecodeFieldValue(kind, value);
  if (!msg) return std::nullopt;
  const gp::Reflection* r = (*msg)->GetReflection();
  switch (fd->cpp_type()) {
    case gp::FieldDescriptor::CPPTYPE_ENUM: {
      const gp::EnumValueDescriptor* v = r->GetEnum(**msg, fd);
      if (v->options().HasExtension(teduh::rank)) return v->options().GetExtension(teduh::rank);
      return v->number();
    }
    case gp::FieldDescriptor::CPPTYPE_INT32:
      return r->GetInt32(**msg, fd);
    case gp::FieldDescriptor::CPPTYPE_INT64:
      return r->GetInt64(**msg, fd);
    case gp::FieldDescriptor::CPPTYPE_UINT32:
      return r->GetUInt32(**msg, fd);
    default:
      return std::nullopt;
  }
}

MergeDecision DecideMerge(const RecordKind* kind, const FieldPolicy* field,
                          const std::optional<MergeValue>& current,
                          const std::optional<Stamp>& base, const MergeValue& incoming) {
  MergeDecision d;
  if (!current) return d;  // first value of the field
  if ((kind && kind->append_only) || (field && field->merge == teduh::MERGE_RULE_IMMUTABLE)) {
    d.action = MergeAction::kReject;
    d.reason = "immutable";
    return d;
  }
  // Fast-forward: the writer saw the latest value, under the stamp it was
  // stored with or, for a value the server re-stamped, under the stamp its
  // writer gave it (the writer's next edit of the field in the same push
  // still names that one).
  if (base &&
      (*base == current->stamp || (current->origin_hlc != 0 && base->hlc == current->origin_hlc &&
                                   base->device == current->stamp.device)))
    return d;
  d.concurrent = true;
  d.action = ByStamp(current->stamp, incoming.stamp);
  if (!field || !kind) return d;
  switch (field->sealed ? teduh::MERGE_RULE_LWW : field->merge) {
    case teduh::MERGE_RULE_MAX:
    case teduh::MERGE_RULE_STAGE: {
      auto cur = MergeRank(*kind, *field, current->value);
      auto inc = MergeRank(*kind, *field, incoming.value);
      if (cur && inc && *cur != *inc)
        d.action = *inc > *cur ? MergeAction::kApply : MergeAction::kKeep;
      break;
    }
    case teduh::MERGE_RULE_UNION: {
      auto cur = SetElements(*kind, *field, current->value);
      auto inc = SetElements(*kind, *field, incoming.value);
      if (!cur || !inc) break;
      auto contains = [](const std::vector<std::string>& big,
                         const std::vector<std::string>& small) {
        return std::all_of(small.begin(), small.end(), [&](const std::string& x) {
          return std::find(big.begin(), big.end(), x) != big.end();
        });
      };
      if (contains(*cur, *inc)) {
        d.action = MergeAction::kKeep;  // nothing new on the incoming side
      } else if (contains(*inc, *cur)) {
        d.action = MergeAction::kApply;  // it already holds everything
      } else {
        d.action = MergeAction::kCombine;
        d.combined = Union(*kind, *field, std::move(*cur), *inc);
      }
      break;
    }
    default:
      break;
  }
  if (field->merge == teduh::MERGE_RULE_REVIEW) d.conflict = true;
  return d;
}

std::optional<MergeAction> EpisodeOrder(const EpisodeMark& episode, std::uint64_t current_seq,
                                        const std::optional<Stamp>& base, const Stamp& incoming) {
  const bool current_new = current_seq > episode.seq;
  const bool incoming_new =
      (incoming.device == episode.stamp.device && incoming.hlc > episode.stamp.hlc) ||
      (base && *base > episode.stamp);
  if (current_new == incoming_new) return std::nullopt;
  return incoming_new ? MergeAction::kApply : MergeAction::kKeep;
}

}  // namespace teduh::core
