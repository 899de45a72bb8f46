#include <fmt/format.h>

#include <deque>

#include "core/fake_server.h"
#include "teduh/core/frame_codec.h"
#include "teduh/core/merge.h"
#include "teduh/core/schema.h"
#include "teduh/core/sealing.h"
#include "teduh/crypto/crypto.h"

namespace teduh::testing {
namespace {

namespace pb = teduh::sync::v1;

class FakeTransport final : public core::Transport {
 public:
  explicit FakeTransport(FakeServer& server) : server_(server) {}
  core::Outcome<void> Send(std::string_view bytes) override {
    if (closed_) return core::Fail(core::errc::connection_failed, "closed");
    bool drop = false;
    std::string reply = server_.Handle(std::string(bytes), &drop);
    if (drop) {
      closed_ = true;
      return {};
    }
    replies_.push_back(std::move(reply));
    return {};
  }
  core::Outcome<std::string> Receive() override {
    if (replies_.empty()) return core::Fail(core::errc::connection_failed, "connection lost");
    std::string r = std::move(replies_.front());
    replies_.pop_front();
    return r;
  }
  void Close() override { closed_ = true; }

 private:
  FakeServer& server_;
  std::deque<std::string> replies_;
  bool closed_ = false;
  friend class FakeServer;
};

pb::Frame ErrorFrame(std::uint64_t id, pb::ErrorCode code) {
  return core::MakeErrorFrame(id, code, "fake server error");
}

}  // namespace

FakeServer::FakeServer() {
  auto id = core::NewId();
  server_id = std::string(core::AsBytes(id));
}

std::string FakeServer::BootstrapCode() {
  std::string code = fmt::format("BOOT-{:04}-AAAA-BBBB", ++counter_);
  codes_[code] = CodeRow{pb::ROLE_ADMIN, "admin", true, false};
  return code;
}

std::string FakeServer::AddCode(pb::Role role, const std::string& user) {
  std::string code = fmt::format("CODE-{:04}-AAAA-BBBB", ++counter_);
  codes_[code] = CodeRow{role, user, false, false};
  return code + "-" + core::KeyFingerprint(unit_root_pk);
}

core::Connector FakeServer::connector() {
  return [this](std::string_view,
                const core::TransportOptions&) -> core::Outcome<std::unique_ptr<core::Transport>> {
    return std::unique_ptr<core::Transport>(new FakeTransport(*this));
  };
}

std::string FakeServer::Handle(const std::string& bytes, bool* drop) {
  auto frame = core::DecodeFrame(bytes, core::FrameLimits{});
  if (!frame) return core::EncodeFrame(ErrorFrame(0, pb::ERROR_CODE_MALFORMED_FRAME));
  const std::uint64_t rid = frame->request_id();
  pb::Frame out;
  out.set_request_id(rid);
  // The fake keeps one "session" per FakeServer: the last authenticated device.
  core::Id& session_device = session_device_;
  std::string& nonce = nonce_;
  switch (frame->body_case()) {
    case pb::Frame::kEnroll: {
      const auto& e = frame->enroll();
      std::string code = e.code();
      std::size_t cut = code.size() > 20 ? 19 : code.size();
      auto it = codes_.find(code.substr(0, cut));
      if (it == codes_.end() || it->second.used) {
        return core::EncodeFrame(ErrorFrame(rid, pb::ERROR_CODE_BAD_ENROLLMENT_CODE));
      }
      std::string msg = core::EnrollMessage(e.code(), e.sign_pk(), e.box_pk(), e.unit_root_pk());
      if (!crypto::Verify(core::AsSpan(e.sign_pk()), core::AsSpan(msg),
                          core::AsSpan(e.signature()))) {
        return core::EncodeFrame(ErrorFrame(rid, pb::ERROR_CODE_BAD_SIGNATURE));
      }
      it->second.used = true;
      if (it->second.bootstrap && unit_root_pk.empty()) unit_root_pk = e.unit_root_pk();
      DeviceRow d;
      d.id = core::NewId();
      d.sign_pk = e.sign_pk();
      d.box_pk = e.box_pk();
      d.user = it->second.user;
      d.label = e.label();
      d.role = it->second.role;
      d.state = it->second.bootstrap ? pb::DEVICE_STATE_ACTIVE : pb::DEVICE_STATE_PENDING;
      auto* r = out.mutable_enroll_result();
      r->set_device_id(std::string(core::AsBytes(d.id)));
      r->set_user(d.user);
      r->set_role(d.role);
      r->set_state(d.state);
      r->set_unit_id("dumai");
      r->set_unit_name("UPTD PPA Kota Dumai");
      r->set_server_id(server_id);
      r->set_unit_root_pk(unit_root_pk);
      devices[d.id] = d;
      break;
    }
    case pb::Frame::kHello: {
      auto id = core::IdFromBytes(frame->hello().device_id());
      if (!id || !devices.count(*id)) {
        return core::EncodeFrame(ErrorFrame(rid, pb::ERROR_CODE_UNKNOWN_DEVICE));
      }
      session_device = *id;
      auto n = crypto::RandomArray<32>();
      nonce.assign(reinterpret_cast<const char*>(n.data()), n.size());
      out.mutable_challenge()->set_nonce(nonce);
      out.mutable_challenge()->set_server_id(server_id);
      out.mutable_challenge()->set_version(1);
      break;
    }
    case pb::Frame::kProof: {
      DeviceRow& d = devices[session_device];
      std::string msg = core::AuthMessage(nonce, server_id, core::AsBytes(session_device));
      if (!crypto::Verify(core::AsSpan(d.sign_pk), core::AsSpan(msg),
                          core::AsSpan(frame->proof().signature()))) {
        return core::EncodeFrame(ErrorFrame(rid, pb::ERROR_CODE_BAD_SIGNATURE));
      }
      if (d.state == pb::DEVICE_STATE_PENDING) {
        return core::EncodeFrame(ErrorFrame(rid, pb::ERROR_CODE_DEVICE_PENDING));
      }
      if (d.state == pb::DEVICE_STATE_REVOKED) {
        return core::EncodeFrame(ErrorFrame(rid, pb::ERROR_CODE_DEVICE_REVOKED));
      }
      auto* w = out.mutable_welcome();
      w->set_role(d.role);
      w->set_user(d.user);
      w->set_unit_id("dumai");
      w->set_time_zone(time_zone);
      w->set_server_time_ms(env_.NowMs());
      w->set_generation(generation);
      for (const auto& g : d.grants) *w->add_grants() = g;
      w->set_unit_root_pk(unit_root_pk);
      w->set_max_push_changes(7);  // small, to exercise batching
      w->set_max_pull_changes(static_cast<std::uint32_t>(max_pull));
      break;
    }
    case pb::Frame::kPush: {
      DeviceRow& d = devices[session_device];
      auto* res = out.mutable_push_result();
      for (const auto& ch : frame->push().changes()) {
        pb::ChangeResult r;
        r.set_device_seq(ch.device_seq());
        if (ch.device_seq() <= d.max_seq) {
          auto it = d.results.find(ch.device_seq());
          if (it != d.results.end()) {
            r = it->second;
          } else {
            r.set_status(pb::ChangeResult::STATUS_APPLIED);
            *r.mutable_stamp() = ch.stamp();
          }
          *res->add_results() = r;
          continue;
        }
        d.max_seq = ch.device_seq();
        if (reject_fields.count(ch.field())) {
          r.set_status(pb::ChangeResult::STATUS_REJECTED);
          r.set_reason("forbidden");
          r.set_detail("this field may not be changed by your role");
          d.results[ch.device_seq()] = r;
          *res->add_results() = r;
          continue;
        }
        const core::RecordKind* kind = core::Schema::Get().FindKind(ch.kind());
        const core::FieldPolicy* field = kind ? kind->FindField(ch.field()) : nullptr;
        auto key = std::make_pair(ch.record_id(), ch.field());
        std::optional<core::MergeValue> current;
        std::optional<core::Stamp> base;
        auto stamp_of = [](const pb::Stamp& s) {
          core::Stamp st;
          st.hlc = s.hlc();
          if (auto id = core::IdFromBytes(s.device_id())) st.device = *id;
          return st;
        };
        if (auto it = current_.find(key); it != current_.end()) {
          current = core::MergeValue{stamp_of(log[it->second].stamp()), log[it->second].value()};
        }
        if (ch.has_base()) base = stamp_of(ch.base());
        auto decision = core::DecideMerge(kind, field, current, base,
                                          core::MergeValue{stamp_of(ch.stamp()), ch.value()});
        hlc_.Observe(ch.stamp().hlc());
        if (decision.action == core::MergeAction::kReject) {
          r.set_status(pb::ChangeResult::STATUS_REJECTED);
          r.set_reason(decision.reason);
          d.results[ch.device_seq()] = r;
        } else if (decision.action == core::MergeAction::kApply ||
                   decision.action == core::MergeAction::kCombine) {
          pb::FieldChange stored = ch;
          stored.clear_base();
          stored.clear_device_seq();
          if (decision.action == core::MergeAction::kCombine) {
            // A union: a new value under a fresh server stamp.
            hlc_.Observe(log[current_[key]].stamp().hlc());
            stored.set_value(decision.combined);
            stored.mutable_stamp()->set_hlc(hlc_.Now());
            stored.mutable_stamp()->set_device_id(server_id);
          }
          stored.set_author(d.user);
          stored.set_unit_id("dumai");
          stored.set_seq(log.size() + 1);
          log.push_back(stored);
          current_[key] = log.size() - 1;
          ++applied_count;
          const bool combined = decision.action == core::MergeAction::kCombine;
          r.set_status(decision.concurrent ? pb::ChangeResult::STATUS_MERGED
                                           : pb::ChangeResult::STATUS_APPLIED);
          *r.mutable_stamp() = ch.stamp();
          *r.mutable_current() = stored.stamp();
          if (combined) d.results[ch.device_seq()] = r;
        } else {
          r.set_status(pb::ChangeResult::STATUS_MERGED);
          *r.mutable_stamp() = ch.stamp();
          *r.mutable_current() = log[current_[key]].stamp();
          d.results[ch.device_seq()] = r;
        }
        *res->add_results() = r;
      }
      if (drop_after_push) {
        drop_after_push = false;
        *drop = true;
      }
      break;
    }
    case pb::Frame::kPull: {
      const auto& p = frame->pull();
      auto* c = out.mutable_changes();
      c->set_generation(generation);
      std::uint64_t after = p.after_seq();
      if (p.generation() != 0 && p.generation() != generation) {
        c->set_reset(true);
        after = 0;
      }
      std::size_t limit = std::min<std::size_t>(p.limit(), max_pull);
      std::uint64_t last = after;
      for (std::size_t i = after; i < log.size() && c->changes_size() < static_cast<int>(limit);
           ++i) {
        // Only the current value of each field is served.
        if (current_[{log[i].record_id(), log[i].field()}] != i) {
          last = i + 1;
          continue;
        }
        *c->add_changes() = log[i];
        last = i + 1;
      }
      c->set_last_seq(last);
      c->set_has_more(last < log.size());
      break;
    }
    case pb::Frame::kListDevices: {
      if (devices[session_device].role != pb::ROLE_ADMIN) {
        return core::EncodeFrame(ErrorFrame(rid, pb::ERROR_CODE_FORBIDDEN));
      }
      for (const auto& [id, d] : devices) {
        auto* i = out.mutable_device_list()->add_devices();
        i->set_device_id(std::string(core::AsBytes(id)));
        i->set_user(d.user);
        i->set_role(d.role);
        i->set_state(d.state);
        i->set_sign_pk(d.sign_pk);
        i->set_box_pk(d.box_pk);
        i->set_label(d.label);
      }
      break;
    }
    case pb::Frame::kApproveDevice: {
      const auto& a = frame->approve_device();
      auto id = core::IdFromBytes(a.device_id());
      if (!id || !devices.count(*id)) {
        return core::EncodeFrame(ErrorFrame(rid, pb::ERROR_CODE_UNKNOWN_DEVICE));
      }
      for (const auto& g : a.grants()) {
        std::string msg =
            core::GrantMessage(g.device_id(), g.key_class(), g.epoch(), g.sealed_key());
        if (!crypto::Verify(core::AsSpan(unit_root_pk), core::AsSpan(msg),
                            core::AsSpan(g.signature()))) {
          return core::EncodeFrame(ErrorFrame(rid, pb::ERROR_CODE_BAD_SIGNATURE));
        }
      }
      DeviceRow& d = devices[*id];
      d.grants.assign(a.grants().begin(), a.grants().end());
      d.state = pb::DEVICE_STATE_ACTIVE;
      auto* i = out.mutable_approve_result()->mutable_device();
      i->set_device_id(a.device_id());
      i->set_user(d.user);
      i->set_role(d.role);
      i->set_state(d.state);
      i->set_sign_pk(d.sign_pk);
      break;
    }
    case pb::Frame::kAckKeys: {
      // Held epochs are remembered as the grants' `acked` flag, as the real server does.
      DeviceRow& d = devices[session_device];
      for (const auto& held : frame->ack_keys().held())
        for (auto& g : d.grants)
          if (g.key_class() == held.key_class() && g.epoch() == held.epoch()) g.set_acked(true);
      out.mutable_ack_keys_result();
      break;
    }
    default:
      return core::EncodeFrame(ErrorFrame(rid, pb::ERROR_CODE_UNEXPECTED_FRAME));
  }
  return core::EncodeFrame(out);
}

}  // namespace teduh::testing
