// The protocol state machine of one connection (see connection.h).
//
// Design notes
// ------------
// Invariants
//  1. At most one frame is being handled (busy_); the host reads the next
//     frame only after its reply was queued (Reply() calls ReadNext()).
//  2. Before kReady only Hello, Proof (after a Challenge) and EnrollRequest
//     are accepted; anything else gets UNEXPECTED_FRAME and the connection
//     closes. Nothing from a refused frame is written.
//  3. Every store result comes back through a Poster onto this connection's
//     strand; `this` is only touched there. A pending store job holds a
//     Poster, which keeps the host (and so this connection) alive.
//  4. An acknowledgement (PushResult, EnrollResult, ApproveResult) is queued
//     only after the store worker reported its commit.
//  5. In kClosed nothing more is read, handled or sent.
#include "connection.h"

#include <fmt/chrono.h>
#include <fmt/format.h>

#include <algorithm>
#include <cassert>
#include <chrono>
#include <cstdio>

#include "teduh/core/frame_codec.h"
#include "teduh/core/roles.h"
#include "teduh/crypto/crypto.h"

namespace teduh::server {

// ---- ServerContext and Registry ---------------------------------------------------

void ServerContext::Log(std::string_view level, std::string_view event,
                        std::string_view fields) const {
  auto now = std::chrono::system_clock::time_point(std::chrono::milliseconds(env.NowMs()));
  std::string line = fmt::format("ts={:%Y-%m-%dT%H:%M:%S}Z level={} event={}{}{}",
                                 std::chrono::time_point_cast<std::chrono::seconds>(now), level,
                                 event, fields.empty() ? "" : " ", fields);
  if (config.log) {
    config.log(line);
  } else {
    line.push_back('\n');
    std::fwrite(line.data(), 1, line.size(), stderr);
  }
}

std::uint64_t Registry::Add(Entry entry) {
  std::lock_guard lock(mu_);
  std::uint64_t id = next_id_++;
  entries_.emplace(id, std::move(entry));
  return id;
}

void Registry::Authenticated(std::uint64_t id, const Id& device, PullScope scope) {
  std::lock_guard lock(mu_);
  auto it = entries_.find(id);
  if (it == entries_.end()) return;
  it->second.authenticated = true;
  it->second.device = device;
  it->second.scope = std::move(scope);
}

void Registry::CloseDevice(const Id& device) {
  std::vector<std::function<void()>> targets;
  {
    std::lock_guard lock(mu_);
    for (const auto& [id, e] : entries_)
      if (e.authenticated && e.device == device) targets.push_back(e.close);
  }
  for (auto& close : targets) close();
}

void Registry::Remove(std::uint64_t id) {
  std::lock_guard lock(mu_);
  entries_.erase(id);
}

void Registry::Poke(std::uint64_t except, bool touched, const std::vector<std::string>& users,
                    bool everyone) {
  if (!touched) return;
  std::vector<std::function<void()>> targets;
  {
    std::lock_guard lock(mu_);
    for (const auto& [id, e] : entries_) {
      if (id == except || !e.authenticated) continue;
      bool hit = false;
      switch (e.scope.kind) {
        case PullScope::Kind::kNothing:
          break;
        case PullScope::Kind::kUnit:
        case PullScope::Kind::kKeys:
          hit = true;
          break;
        case PullScope::Kind::kAssignedTo:
          hit = everyone || std::binary_search(users.begin(), users.end(), e.scope.user);
          break;
      }
      if (hit) targets.push_back(e.poke);
    }
  }
  for (auto& poke : targets) poke();  // snapshot, then post (no lock held)
}

void Registry::CloseAll() {
  std::vector<std::function<void()>> targets;
  {
    std::lock_guard lock(mu_);
    for (const auto& [id, e] : entries_) targets.push_back(e.close);
  }
  for (auto& close : targets) close();
}

std::size_t Registry::size() const {
  std::lock_guard lock(mu_);
  return entries_.size();
}

// ---- Connection ------------------------------------------------------------------------

namespace {

constexpr std::uint32_t kDiskFullRetryMs = 60'000;

std::string ShortId(const Id& id) { return core::ToHex(id).substr(0, 8); }

const char* ErrorName(v1::ErrorCode code) { return v1::ErrorCode_Name(code).c_str(); }

}  // namespace

Connection::Connection(ServerContext& ctx, ConnectionHost& host, std::string peer,
                       std::string address)
    : ctx_(ctx), host_(host), peer_(std::move(peer)), address_(std::move(address)) {}

Connection::~Connection() {
  if (registry_id_) ctx_.registry.Remove(registry_id_);
}

void Connection::Open(bool busy) {
  Registry::Entry entry;
  auto post = host_.WeakPoster();
  entry.poke = [post, this] { post([this] { Poke(); }); };
  entry.close = [post, this] {
    post([this] {
      if (state_ == State::kClosed) return;
      state_ = State::kClosed;
      host_.Close();
    });
  };
  registry_id_ = ctx_.registry.Add(std::move(entry));
  ctx_.Log("info", "connection_open", fmt::format("peer={}", peer_));
  if (busy) {
    busy_ = true;
    Fail(0, v1::ERROR_CODE_SERVER_BUSY,
         "The server has too many connections waiting to sign in; try again shortly.",
         ctx_.config.busy_retry_ms);
  }
}

std::size_t Connection::FrameBound() const {
  const bool known = state_ == State::kReady || state_ == State::kWiping;
  return known ? ctx_.config.limits.max_frame_bytes
               : std::min(ctx_.config.pending_frame_bytes, ctx_.config.limits.max_frame_bytes);
}

void Connection::OnTooLarge() {
  if (state_ == State::kClosed) return;
  ctx_.counters.frames_too_large.fetch_add(1, std::memory_order_relaxed);
  busy_ = true;
  Fail(0, v1::ERROR_CODE_FRAME_TOO_LARGE,
       fmt::format("A frame may hold at most {} bytes {}.", FrameBound(),
                   state_ == State::kReady || state_ == State::kWiping
                       ? "(push fewer changes at a time)"
                       : "before the device has signed in"));
}

void Connection::OnClosed() {
  if (registry_id_) ctx_.registry.Remove(registry_id_);
  registry_id_ = 0;
  state_ = State::kClosed;
}

void Connection::AssertInvariants() const {
  assert(state_ != State::kReady || identity_.role != v1::ROLE_UNSPECIFIED);
}

void Connection::Reply(std::uint64_t request_id, v1::Frame frame, bool close) {
  busy_ = false;
  if (state_ == State::kClosed) return;  // invariant 5
  frame.set_request_id(request_id);
  ctx_.counters.frames_out.fetch_add(1, std::memory_order_relaxed);
  host_.Send(core::EncodeFrame(frame));
  if (close) {
    state_ = State::kClosed;
    host_.Close();
  } else {
    host_.ReadNext();  // invariant 1
  }
  AssertInvariants();
}

void Connection::Fail(std::uint64_t request_id, v1::ErrorCode code, std::string message,
                      std::uint32_t retry_after_ms) {
  ctx_.Log("warn", "refused", fmt::format("peer={} code={}", peer_, ErrorName(code)));
  v1::Frame frame = core::MakeErrorFrame(request_id, code, std::move(message));
  if (retry_after_ms) frame.mutable_error()->set_retry_after_ms(retry_after_ms);
  Reply(request_id, std::move(frame), true);
}

void Connection::StoreFailed(std::uint64_t request_id, core::error_code ec) {
  if (ec == core::make_error_code(core::errc::disk_full) && state_ == State::kReady) {
    ctx_.Log("warn", "refused", fmt::format("peer={} code=ERROR_CODE_DISK_FULL", peer_));
    v1::Frame frame = core::MakeErrorFrame(
        request_id, v1::ERROR_CODE_DISK_FULL,
        "The server's disk is full: nothing from this request was saved. The changes stay on "
        "the device and are sent when there is room again.");
    frame.mutable_error()->set_retry_after_ms(kDiskFullRetryMs);
    Reply(request_id, std::move(frame), false);  // reads go on
    return;
  }
  if (ec == core::make_error_code(core::errc::store_damaged) && state_ == State::kReady) {
    ctx_.Log("warn", "refused", fmt::format("peer={} code=ERROR_CODE_STORE_DAMAGED", peer_));
    Reply(request_id,
          core::MakeErrorFrame(request_id, v1::ERROR_CODE_STORE_DAMAGED,
                               "The server found damage in what this request needs; nothing "
                               "from it was saved. The unit's IT admin must check the store."),
          false);
    return;
  }
  Fail(request_id, v1::ERROR_CODE_INTERNAL,
       "The server could not complete the request; nothing from it was saved. Try again later.");
}

void Connection::OnHandshakeTimeout() {
  if (state_ == State::kClosed || state_ == State::kReady) return;
  Fail(0, v1::ERROR_CODE_TIMEOUT, "The handshake took too long.");
}

void Connection::Poke() {
  if (state_ != State::kReady) return;
  v1::Frame frame;
  frame.mutable_poke();
  ctx_.counters.frames_out.fetch_add(1, std::memory_order_relaxed);
  host_.SendPoke(core::EncodeFrame(frame));
}

void Connection::OnMessage(std::string_view bytes, bool binary) {
  if (state_ == State::kClosed) return;
  ctx_.counters.frames_in.fetch_add(1, std::memory_order_relaxed);
  if (!binary) {
    Fail(0, v1::ERROR_CODE_MALFORMED_FRAME, "Frames are binary WebSocket messages.");
    return;
  }
  std::string why;
  auto decoded = core::DecodeFrame(bytes, ctx_.config.limits, &why);
  if (!decoded) {
    const bool too_large = decoded.error() == core::make_error_code(core::errc::frame_too_large);
    Fail(0, too_large ? v1::ERROR_CODE_FRAME_TOO_LARGE : v1::ERROR_CODE_MALFORMED_FRAME,
         why.empty() ? std::string("The frame could not be decoded.") : why);
    return;
  }
  auto frame = std::make_shared<v1::Frame>(std::move(*decoded));
  const std::uint64_t rid = frame->request_id();
  busy_ = true;
  switch (state_) {
    case State::kNew:
      if (frame->has_hello()) return OnHello(rid, frame->hello());
      if (frame->has_enroll()) return OnEnroll(rid, frame->enroll());
      break;
    case State::kChallenged:
      if (frame->has_proof()) return OnProof(rid, frame->proof());
      break;
    case State::kWiping:
      if (frame->has_wipe_receipt()) return OnWipeReceipt(rid, frame);
      break;
    case State::kReady:
      switch (frame->body_case()) {
        case v1::Frame::kPush:
          return OnPush(rid, frame);
        case v1::Frame::kPull:
          return OnPull(rid, frame->pull());
        case v1::Frame::kListDevices:
          return OnListDevices(rid, frame->list_devices().id_prefix());
        case v1::Frame::kApproveDevice:
          return OnApprove(rid, frame);
        case v1::Frame::kRevokeDevice:
          return OnRevoke(rid, frame);
        case v1::Frame::kRotateKeys:
          return OnRotate(rid, frame);
        case v1::Frame::kAckKeys:
          return OnAckKeys(rid, frame);
        case v1::Frame::kKeyStatusRequest:
          return OnKeyStatus(rid);
        case v1::Frame::kRetireKeys:
          return OnRetire(rid, frame);
        case v1::Frame::kShredRequest:
          return SimpleWrite(rid, [frame, who = identity_](WriterState& ws, Outcome* out) {
            return RequestShred(ws, who, frame->shred_request(), out);
          });
        case v1::Frame::kShredCase:
          return OnShred(rid, frame);
        case v1::Frame::kOffboardUser:
          return OnOffboard(rid, frame);
        case v1::Frame::kHistoryRequest:
          return OnHistory(rid, frame->history_request());
        case v1::Frame::kRepairOffer:
          return OnRepairOffer(rid, frame);
        case v1::Frame::kRekeyList:
          return SimpleRead(rid, [this, frame, who = identity_](Store& store, Outcome* out) {
            return RekeyListFor(store, ctx_.config, who, frame->rekey_list(), out);
          });
        case v1::Frame::kRekeyFetch:
          return SimpleRead(rid, [this, frame, who = identity_](Store& store, Outcome* out) {
            return RekeyFetchFor(store, ctx_.config, who, frame->rekey_fetch(), out);
          });
        case v1::Frame::kRekeyCase:
          return OnRekey(rid, frame);
        default:
          break;
      }
      break;
    case State::kClosed:
      return;
  }
  Fail(rid, v1::ERROR_CODE_UNEXPECTED_FRAME,
       state_ == State::kReady    ? "This frame is not expected from a device."
       : state_ == State::kWiping ? "This device was revoked: only its wipe receipt is accepted."
                                  : "Authenticate (Hello, Proof) or enroll first.");
}

void Connection::OnHello(std::uint64_t rid, const v1::Hello& hello) {
  bool speaks = false;
  for (std::uint32_t v : hello.versions()) speaks |= v == core::kProtocolVersion;
  if (!speaks) {
    Fail(rid, v1::ERROR_CODE_UNSUPPORTED_VERSION,
         fmt::format("This server speaks protocol version {}; please update the Teduh app.",
                     core::kProtocolVersion));
    return;
  }
  auto id = core::IdFromBytes(hello.device_id());
  if (!id) {
    Fail(rid, v1::ERROR_CODE_MALFORMED_FRAME, "The device id is not 16 bytes.");
    return;
  }
  hello_device_ = *id;
  crypto::RandomBytes(nonce_);
  v1::Frame frame;
  v1::Challenge* c = frame.mutable_challenge();
  c->set_nonce(std::string(reinterpret_cast<const char*>(nonce_.data()), nonce_.size()));
  c->set_server_id(std::string(core::AsBytes(ctx_.worker->unit().server_id)));
  c->set_version(core::kProtocolVersion);
  state_ = State::kChallenged;
  Reply(rid, std::move(frame), false);
}

void Connection::OnProof(std::uint64_t rid, const v1::Proof& proof) {
  std::string nonce(reinterpret_cast<const char*>(nonce_.data()), nonce_.size());
  std::string server_id(core::AsBytes(ctx_.worker->unit().server_id));
  Id device = hello_device_;
  ServerContext& ctx = ctx_;
  auto post = host_.Poster();
  bool queued = ctx_.worker->SubmitRead([this, &ctx, post, rid, device, nonce = std::move(nonce),
                                         server_id = std::move(server_id),
                                         signature = proof.signature()](Store& store) {
    auto out = std::make_shared<AuthOutcome>();
    auto ec = Authenticate(store, ctx.config, ctx.env, device, nonce, server_id, signature,
                           out.get(), [&ctx] { return ctx.worker->RepairsWanted(); });
    if (!out->repairs_gone.empty()) ctx.worker->Repaired(out->repairs_gone);
    post([this, rid, ec, out] {
      if (ec) return StoreFailed(rid, ec);
      if (out->identity && !host_.AdmitAuthenticated()) {
        return Fail(rid, v1::ERROR_CODE_SERVER_BUSY,
                    "The server has as many devices connected as it is set to serve; try again "
                    "shortly.",
                    ctx_.config.busy_retry_ms);
      }
      if (out->identity) {
        identity_ = *out->identity;
        state_ = State::kReady;
        host_.HandshakeDone();
        ctx_.registry.Authenticated(registry_id_, identity_.device_id, ScopeFor(identity_));
        ctx_.Log("info", "authenticated",
                 fmt::format("peer={} device={} role={}", peer_, ShortId(identity_.device_id),
                             core::RoleName(identity_.role)));
      }
      if (out->wiping) {
        wipe_device_ = *out->wiping;
        state_ = State::kWiping;
        // Erasing a large store takes time; the receipt must not be cut off
        // by the handshake timer (the idle timeout still applies).
        host_.HandshakeDone();
        ctx_.Log("warn", "wipe_ordered",
                 fmt::format("peer={} device={}", peer_, ShortId(wipe_device_)));
      }
      Reply(rid, std::move(out->reply), out->close);
    });
  });
  if (!queued) StoreFailed(rid);
}

void Connection::OnEnroll(std::uint64_t rid, const v1::EnrollRequest& request) {
  std::uint32_t wait_ms = 0;
  if (!ctx_.admission.AllowEnroll(address_, ctx_.env.NowMs(), &wait_ms)) {
    Fail(rid, v1::ERROR_CODE_RATE_LIMITED,
         "Too many enrollment requests from this network address; try again later.", wait_ms);
    return;
  }
  if (request.version() != 0 && request.version() != core::kProtocolVersion) {
    Fail(rid, v1::ERROR_CODE_UNSUPPORTED_VERSION,
         fmt::format("This server speaks protocol version {}; please update the Teduh app.",
                     core::kProtocolVersion));
    return;
  }
  auto req = std::make_shared<v1::EnrollRequest>(request);
  auto out = std::make_shared<Outcome>();
  auto post = host_.Poster();
  bool queued = ctx_.worker->SubmitWrite(
      [req, out](WriterState& ws) { return Enroll(ws, *req, out.get()); },
      [this, post, rid, out](core::error_code ec) {
        post([this, rid, out, ec] {
          if (ec) return StoreFailed(rid, ec);
          if (out->reply.has_enroll_result()) {
            const auto& r = out->reply.enroll_result();
            ctx_.Log("info", "enrolled",
                     fmt::format("peer={} device={} role={} state={}", peer_,
                                 core::ToHex(core::AsSpan(r.device_id())).substr(0, 8),
                                 core::RoleName(r.role()), v1::DeviceState_Name(r.state())));
          }
          Reply(rid, std::move(out->reply), out->close);
        });
      });
  if (!queued) StoreFailed(rid);
}

void Connection::OnPush(std::uint64_t rid, std::shared_ptr<v1::Frame> frame) {
  ctx_.counters.pushes.fetch_add(1, std::memory_order_relaxed);
  auto out = std::make_shared<PushOutcome>();
  auto post = host_.Poster();
  ServerContext& ctx = ctx_;
  const std::uint64_t me = registry_id_;
  bool queued = ctx_.worker->SubmitWrite(
      [frame, out, who = identity_](WriterState& ws) {
        return ApplyPush(ws, who, frame->push(), out.get());
      },
      [this, &ctx, post, rid, out, me](core::error_code ec) {
        if (!ec) {
          ctx.counters.changes_applied.fetch_add(out->applied, std::memory_order_relaxed);
          if (out->applied) ctx.registry.Poke(me, out->touched, out->poke_users);
        }
        post([this, rid, out, ec] {
          if (ec) return StoreFailed(rid, ec);
          Reply(rid, std::move(out->reply), out->close);
        });
      });
  if (!queued) StoreFailed(rid);
}

void Connection::OnPull(std::uint64_t rid, const v1::Pull& pull) {
  ServerContext& ctx = ctx_;
  auto post = host_.Poster();
  if (pull.rolled_back()) {
    // The device saw newer data than the store holds: the writer checks the
    // claim and gives the store a new generation, then the pull is served
    // (as a reset).
    auto rolled = std::make_shared<bool>(false);
    auto generation = std::make_shared<std::uint64_t>(ctx.worker->generation());
    bool queued = ctx.worker->SubmitWrite(
        [pull, rolled, generation, who = identity_](WriterState& ws) {
          return RollGeneration(ws, who, pull, generation.get(), rolled.get());
        },
        [this, &ctx, post, rid, pull, rolled, generation](core::error_code ec) {
          if (!ec) ctx.worker->set_generation(*generation);  // the store's, rolled or not
          if (!ec && *rolled) {
            ctx.Log("warn", "store_rolled_back",
                    fmt::format("device={} new_generation={} (the store was put back from an "
                                "older copy; every device re-sends and pulls again)",
                                ShortId(identity_.device_id), *generation));
          }
          v1::Pull plain = pull;
          plain.clear_rolled_back();
          post([this, rid, plain, ec] {
            if (ec) return StoreFailed(rid, ec);
            OnPull(rid, plain);
          });
        });
    if (!queued) StoreFailed(rid);
    return;
  }
  ctx_.counters.pulls.fetch_add(1, std::memory_order_relaxed);
  bool queued = ctx_.worker->SubmitRead([this, &ctx, post, rid, pull,
                                         who = identity_](Store& store) {
    auto out = std::make_shared<PullOutcome>();
    auto ec =
        Pull(store, ctx.config, ctx.worker->unit(), ctx.worker->generation(), who, pull, out.get());
    if (ec) {
      post([this, rid, ec] { StoreFailed(rid, ec); });
      return;
    }
    const bool last = !out->close && !out->reply.changes().has_more();
    if (!out->close && (!out->new_holdings.empty() || last || out->evictions_received_upto > 0)) {
      // The device must never hold a case the server has not recorded it
      // holding (re-keying after a loss needs the list): reply after commit.
      bool queued = ctx.worker->SubmitWrite(
          [out, device = who.device_id](WriterState& ws) {
            return RecordHoldings(ws, device, out->new_holdings, out->evictions_received_upto);
          },
          [this, post, rid, out](core::error_code ec) {
            post([this, rid, out, ec] {
              // On a full disk the pull is still served when it hands out
              // no new case: what it recorded (evictions seen, last sync)
              // is recorded again at the next pull.
              const bool full = ec == core::make_error_code(core::errc::disk_full);
              if (ec && !(full && out->new_holdings.empty())) return StoreFailed(rid, ec);
              Reply(rid, std::move(out->reply), false);
            });
          });
      if (!queued) post([this, rid] { StoreFailed(rid); });
      return;
    }
    post([this, rid, out] { Reply(rid, std::move(out->reply), out->close); });
  });
  if (!queued) StoreFailed(rid);
}

void Connection::OnHistory(std::uint64_t rid, const v1::HistoryRequest& request) {
  ServerContext& ctx = ctx_;
  auto post = host_.Poster();
  bool queued =
      ctx_.worker->SubmitRead([this, &ctx, post, rid, request, who = identity_](Store& store) {
        auto out = std::make_shared<Outcome>();
        auto ec = FieldHistory(store, ctx.config, ctx.worker->unit(), who, request, out.get());
        post([this, rid, out, ec] {
          if (ec) return StoreFailed(rid, ec);
          Reply(rid, std::move(out->reply), out->close);
        });
      });
  if (!queued) StoreFailed(rid);
}

void Connection::OnListDevices(std::uint64_t rid, std::string prefix) {
  auto post = host_.Poster();
  bool queued = ctx_.worker->SubmitRead(
      [this, post, rid, who = identity_, prefix = std::move(prefix)](Store& store) {
        auto out = std::make_shared<Outcome>();
        auto ec = ListDevicesFor(store, who, prefix, out.get());
        post([this, rid, out, ec] {
          if (ec) return StoreFailed(rid, ec);
          Reply(rid, std::move(out->reply), out->close);
        });
      });
  if (!queued) StoreFailed(rid);
}

void Connection::OnApprove(std::uint64_t rid, std::shared_ptr<v1::Frame> frame) {
  auto out = std::make_shared<Outcome>();
  auto post = host_.Poster();
  bool queued = ctx_.worker->SubmitWrite(
      [frame, out, who = identity_](WriterState& ws) {
        return Approve(ws, who, frame->approve_device(), out.get());
      },
      [this, post, rid, out](core::error_code ec) {
        post([this, rid, out, ec] {
          if (ec) return StoreFailed(rid, ec);
          if (out->reply.has_approve_result())
            ctx_.Log("info", "approved",
                     fmt::format(
                         "peer={} by={} device={}", peer_, ShortId(identity_.device_id),
                         core::ToHex(core::AsSpan(out->reply.approve_result().device().device_id()))
                             .substr(0, 8)));
          Reply(rid, std::move(out->reply), out->close);
        });
      });
  if (!queued) StoreFailed(rid);
}

void Connection::OnRevoke(std::uint64_t rid, std::shared_ptr<v1::Frame> frame) {
  auto out = std::make_shared<Outcome>();
  auto post = host_.Poster();
  bool queued = ctx_.worker->SubmitWrite(
      [frame, out, who = identity_](WriterState& ws) {
        return Revoke(ws, who, frame->revoke_device(), out.get());
      },
      [this, post, rid, out](core::error_code ec) {
        post([this, rid, out, ec] {
          if (ec) return StoreFailed(rid, ec);
          if (out->reply.has_revoke_result()) {
            const std::string& raw = out->reply.revoke_result().device().device_id();
            ctx_.Log("warn", "revoked",
                     fmt::format("peer={} by={} device={}", peer_, ShortId(identity_.device_id),
                                 core::ToHex(core::AsSpan(raw)).substr(0, 8)));
            // Its open connections end now; it reconnects to its wipe order.
            if (auto id = core::IdFromBytes(raw)) ctx_.registry.CloseDevice(*id);
          }
          Reply(rid, std::move(out->reply), out->close);
        });
      });
  if (!queued) StoreFailed(rid);
}

void Connection::OnWipeReceipt(std::uint64_t rid, std::shared_ptr<v1::Frame> frame) {
  auto out = std::make_shared<Outcome>();
  auto post = host_.Poster();
  bool queued = ctx_.worker->SubmitWrite(
      [frame, out, device = wipe_device_](WriterState& ws) {
        return RecordWipeReceipt(ws, device, frame->wipe_receipt(), out.get());
      },
      [this, post, rid, out](core::error_code ec) {
        post([this, rid, out, ec] {
          if (ec) return StoreFailed(rid, ec);
          ctx_.Log("warn", "wipe_receipt",
                   fmt::format("peer={} device={} accepted={}", peer_, ShortId(wipe_device_),
                               out->reply.error().code() == v1::ERROR_CODE_DEVICE_REVOKED));
          Reply(rid, std::move(out->reply), true);
        });
      });
  if (!queued) StoreFailed(rid);
}

void Connection::OnRotate(std::uint64_t rid, std::shared_ptr<v1::Frame> frame) {
  auto out = std::make_shared<Outcome>();
  auto committed = std::make_shared<bool>(false);
  auto post = host_.Poster();
  const std::uint64_t me = registry_id_;
  ServerContext& ctx = ctx_;
  bool queued = ctx_.worker->SubmitWrite(
      [frame, out, committed, who = identity_](WriterState& ws) {
        return Rotate(ws, who, frame->rotate_keys(), out.get(), committed.get());
      },
      [this, &ctx, post, rid, out, committed, me](core::error_code ec) {
        // Every device holding a case pulls its re-wrapped keys.
        if (!ec && *committed) ctx.registry.Poke(me, true, {}, /*everyone=*/true);
        post([this, rid, out, committed, ec] {
          if (ec) return StoreFailed(rid, ec);
          if (*committed)
            ctx_.Log("warn", "rotated",
                     fmt::format("peer={} by={} records={}", peer_, ShortId(identity_.device_id),
                                 out->reply.rotate_result().staged()));
          Reply(rid, std::move(out->reply), out->close);
        });
      });
  if (!queued) StoreFailed(rid);
}

void Connection::OnRepairOffer(std::uint64_t rid, std::shared_ptr<v1::Frame> frame) {
  auto out = std::make_shared<Outcome>();
  auto repaired = std::make_shared<std::vector<FieldKey>>();
  auto poke_users = std::make_shared<std::vector<std::string>>();
  auto post = host_.Poster();
  const std::uint64_t me = registry_id_;
  ServerContext& ctx = ctx_;
  bool queued = ctx_.worker->SubmitWrite(
      [frame, out, repaired, poke_users, who = identity_](WriterState& ws) {
        return RepairValues(ws, who, frame->repair_offer(), out.get(), repaired.get(),
                            poke_users.get());
      },
      [this, &ctx, post, rid, out, repaired, poke_users, me,
       device = identity_.device_id](core::error_code ec) {
        if (!ec && !repaired->empty()) {
          ctx.worker->Repaired(*repaired);
          ctx.Log("info", "store_repaired",
                  fmt::format("device={} values={} note=\"re-sent by a device, each matched "
                              "its stored checksum\"",
                              ShortId(device), repaired->size()));
          // Devices that skipped a damaged value pull it now: those of the
          // whole unit, and those assigned one of the cases repaired.
          ctx.registry.Poke(me, true, *poke_users);
        }
        post([this, rid, out, ec] {
          if (ec) return StoreFailed(rid, ec);
          Reply(rid, std::move(out->reply), out->close);
        });
      });
  if (!queued) StoreFailed(rid);
}

void Connection::OnShred(std::uint64_t rid, std::shared_ptr<v1::Frame> frame) {
  auto out = std::make_shared<Outcome>();
  auto shredded = std::make_shared<bool>(false);
  auto post = host_.Poster();
  const std::uint64_t me = registry_id_;
  ServerContext& ctx = ctx_;
  bool queued = ctx_.worker->SubmitWrite(
      [frame, out, shredded, who = identity_](WriterState& ws) {
        return Shred(ws, who, frame->shred_case(), out.get(), shredded.get());
      },
      [this, &ctx, post, rid, out, shredded, me](core::error_code ec) {
        // Every device that may hold the case drops it now if it is connected.
        if (!ec && *shredded) ctx.registry.Poke(me, true, {}, /*everyone=*/true);
        post([this, rid, out, ec] {
          if (ec) return StoreFailed(rid, ec);
          Reply(rid, std::move(out->reply), out->close);
        });
      });
  if (!queued) StoreFailed(rid);
}

void Connection::OnOffboard(std::uint64_t rid, std::shared_ptr<v1::Frame> frame) {
  auto out = std::make_shared<Outcome>();
  auto users = std::make_shared<std::vector<std::string>>();
  auto post = host_.Poster();
  const std::uint64_t me = registry_id_;
  ServerContext& ctx = ctx_;
  bool queued = ctx_.worker->SubmitWrite(
      [frame, out, users, who = identity_](WriterState& ws) {
        return Offboard(ws, who, frame->offboard_user(), out.get(), users.get());
      },
      [this, &ctx, post, rid, out, users, me, frame](core::error_code ec) {
        if (!ec && out->reply.has_offboard_result()) {
          std::sort(users->begin(), users->end());
          users->erase(std::unique(users->begin(), users->end()), users->end());
          ctx.registry.Poke(me, true, *users);
          // The revoked devices' open connections end now.
          for (const auto& r : frame->offboard_user().revocations())
            if (auto id = core::IdFromBytes(r.device_id())) ctx.registry.CloseDevice(*id);
        }
        post([this, rid, out, ec] {
          if (ec) return StoreFailed(rid, ec);
          Reply(rid, std::move(out->reply), out->close);
        });
      });
  if (!queued) StoreFailed(rid);
}

void Connection::OnAckKeys(std::uint64_t rid, std::shared_ptr<v1::Frame> frame) {
  SimpleWrite(rid, [frame, who = identity_](WriterState& ws, Outcome* out) {
    return AckKeys(ws, who, frame->ack_keys(), out);
  });
}

void Connection::OnRetire(std::uint64_t rid, std::shared_ptr<v1::Frame> frame) {
  SimpleWrite(rid, [frame, who = identity_](WriterState& ws, Outcome* out) {
    return RetireKeys(ws, who, frame->retire_keys(), out);
  });
}

void Connection::SimpleWrite(std::uint64_t rid,
                             std::function<core::error_code(WriterState&, Outcome*)> write) {
  auto out = std::make_shared<Outcome>();
  auto post = host_.Poster();
  bool queued = ctx_.worker->SubmitWrite(
      [write = std::move(write), out](WriterState& ws) { return write(ws, out.get()); },
      [this, post, rid, out](core::error_code ec) {
        post([this, rid, out, ec] {
          if (ec) return StoreFailed(rid, ec);
          Reply(rid, std::move(out->reply), out->close);
        });
      });
  if (!queued) StoreFailed(rid);
}

void Connection::OnKeyStatus(std::uint64_t rid) {
  SimpleRead(
      rid, [who = identity_](Store& store, Outcome* out) { return KeyStatusFor(store, who, out); });
}

void Connection::SimpleRead(std::uint64_t rid,
                            std::function<core::error_code(Store&, Outcome*)> read) {
  auto post = host_.Poster();
  bool queued = ctx_.worker->SubmitRead([this, post, rid, read = std::move(read)](Store& store) {
    auto out = std::make_shared<Outcome>();
    auto ec = read(store, out.get());
    post([this, rid, out, ec] {
      if (ec) return StoreFailed(rid, ec);
      Reply(rid, std::move(out->reply), out->close);
    });
  });
  if (!queued) StoreFailed(rid);
}

void Connection::OnRekey(std::uint64_t rid, std::shared_ptr<v1::Frame> frame) {
  auto out = std::make_shared<Outcome>();
  auto finished = std::make_shared<bool>(false);
  auto post = host_.Poster();
  const std::uint64_t me = registry_id_;
  ServerContext& ctx = ctx_;
  bool queued = ctx_.worker->SubmitWrite(
      [frame, out, finished, who = identity_](WriterState& ws) {
        return Rekey(ws, who, frame->rekey_case(), out.get(), finished.get());
      },
      [this, &ctx, post, rid, out, finished, me](core::error_code ec) {
        // Every device holding the case pulls its new key and values now.
        if (!ec && *finished) ctx.registry.Poke(me, true, {}, /*everyone=*/true);
        post([this, rid, out, ec] {
          if (ec) return StoreFailed(rid, ec);
          Reply(rid, std::move(out->reply), out->close);
        });
      });
  if (!queued) StoreFailed(rid);
}

}  // namespace teduh::server
