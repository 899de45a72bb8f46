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

// Union of both sets, in the order: current's elements, then the incoming
// ones it lacks, sorted within each part so the result does not depend on
// which device wrote first (the union of A and B equals that of B and A).
std::optional<std::string> Union(const RecordKind& kind, const FieldPolicy& field,
                                 std::string_view current, std::string_view incoming) {
  auto a = SetElements(kind, field, current);
  auto b = SetElements(kind, field, incoming);
  if (!a || !b) return std::nullopt;
  auto ma = DecodeFieldValue(kind, current);
  auto mb = DecodeFieldValue(kind, incoming);
  if (!ma || !mb) return std::nullopt;
  const gp::FieldDescriptor* fd = field.descriptor;
  const gp::Reflection* r = (*ma)->GetReflection();
  // Elements of both, each once, in a canonical order (by number or bytes).
  struct Item {
    std::string key;
    const gp::Message* from;
    int index;
  };
  std::vector<Item> items;
  for (int i = 0; i < static_cast<int>(a->size()); ++i) items.push_back({(*a)[i], ma->get(), i});
  for (int i = 0; i < static_cast<int>(b->size()); ++i) items.push_back({(*b)[i], mb->get(), i});
  const bool numeric = fd->cpp_type() != gp::FieldDescriptor::CPPTYPE_STRING;
  std::stable_sort(items.begin(), items.end(), [&](const Item& x, const Item& y) {
    if (numeric) return std::stoll(x.key) < std::stoll(y.key);
    return x.key < y.key;
  });
  items.erase(std::unique(items.begin(), items.end(),
                          [](const Item& x, const Item& y) { return x.key == y.key; }),
              items.end());
  std::unique_ptr<gp::Message> out((*ma)->New());
  for (const Item& it : items) {
    switch (fd->cpp_type()) {
      case gp::FieldDescriptor::CPPTYPE_ENUM:
        r->AddEnumValue(out.get(), fd, r->GetRepeatedEnumValue(*it.from, fd, it.index));
        break;
      case gp::FieldDescriptor::CPPTYPE_INT32:
        r->AddInt32(out.get(), fd, r->GetRepeatedInt32(*it.from, fd, it.index));
        break;
      case gp::FieldDescriptor::CPPTYPE_INT64:
        r->AddInt64(out.get(), fd, r->GetRepeatedInt64(*it.from, fd, it.index));
        break;
      default:
        r->AddString(out.get(), fd, r->GetRepeatedString(*it.from, fd, it.index));
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
  if (base && *base == current->stamp) return d;  // fast-forward: the writer saw the latest value
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
      } else if (auto u = Union(*kind, *field, current->value, incoming.value)) {
        d.action = MergeAction::kCombine;
        d.combined = std::move(*u);
      }
      break;
    }
    default:
      break;
  }
  if (field->merge == teduh::MERGE_RULE_REVIEW) d.conflict = true;
  return d;
}

}  // namespace teduh::core
