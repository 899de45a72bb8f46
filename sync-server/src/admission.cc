#include "admission.h"

#include <algorithm>

namespace teduh::server {

Admission::Ticket& Admission::Ticket::operator=(Ticket&& other) noexcept {
  if (this == &other) return *this;
  Release();
  owner_ = other.owner_;
  address_ = std::move(other.address_);
  verdict_ = other.verdict_;
  authenticated_ = other.authenticated_;
  other.owner_ = nullptr;
  return *this;
}

bool Admission::Ticket::Authenticate() { return owner_ && owner_->Promote(*this); }

void Admission::Ticket::Release() {
  if (!owner_) return;
  owner_->Give(*this);
  owner_ = nullptr;
}

Admission::Ticket Admission::Admit(const std::string& address) {
  Ticket t;
  t.address_ = address;
  std::lock_guard lock(mu_);
  auto& mine = pending_by_address_[address];
  if (mine >= limits_.max_pending_per_address) {
    if (mine == 0) pending_by_address_.erase(address);
    ++counts_.refused_per_address;
    return t;  // kDropped, owns nothing
  }
  if (counts_.pending >= limits_.max_pending) {
    if (mine == 0) pending_by_address_.erase(address);
    ++counts_.refused_pending_full;
    if (busy_answers_ >= limits_.max_busy_answers) return t;  // kDropped
    ++busy_answers_;
    t.verdict_ = Verdict::kBusy;
    t.owner_ = this;
    return t;
  }
  ++mine;
  ++counts_.pending;
  t.verdict_ = Verdict::kAdmitted;
  t.owner_ = this;
  return t;
}

bool Admission::Promote(Ticket& t) {
  std::lock_guard lock(mu_);
  if (t.verdict_ != Verdict::kAdmitted || t.authenticated_) return t.authenticated_;
  if (counts_.authenticated >= limits_.max_authenticated) {
    ++counts_.refused_authenticated_full;
    return false;
  }
  auto it = pending_by_address_.find(t.address_);
  if (it != pending_by_address_.end() && --it->second == 0) pending_by_address_.erase(it);
  --counts_.pending;
  ++counts_.authenticated;
  t.authenticated_ = true;
  return true;
}

void Admission::Give(Ticket& t) {
  std::lock_guard lock(mu_);
  switch (t.verdict_) {
    case Verdict::kDropped:
      return;
    case Verdict::kBusy:
      --busy_answers_;
      return;
    case Verdict::kAdmitted:
      if (t.authenticated_) {
        --counts_.authenticated;
        return;
      }
      if (auto it = pending_by_address_.find(t.address_);
          it != pending_by_address_.end() && --it->second == 0)
        pending_by_address_.erase(it);
      --counts_.pending;
      return;
  }
}

bool Admission::AllowEnroll(const std::string& address, std::int64_t now_ms,
                            std::uint32_t* retry_after_ms) {
  const double burst = limits_.enroll_burst;
  const double per_ms = limits_.enroll_refill_ms > 0 ? 1.0 / limits_.enroll_refill_ms : 1.0;
  std::lock_guard lock(mu_);
  if (enroll_.size() >= 4096) {
    // Forget the addresses whose bucket has refilled: they are as new.
    for (auto it = enroll_.begin(); it != enroll_.end();)
      it = it->second.tokens + (now_ms - it->second.at_ms) * per_ms >= burst ? enroll_.erase(it)
                                                                             : std::next(it);
  }
  if (enroll_.size() >= 4096 && !enroll_.count(address)) {
    // So many addresses enrolling at once is a flood: newcomers wait.
    ++counts_.refused_enroll_rate;
    if (retry_after_ms) *retry_after_ms = static_cast<std::uint32_t>(limits_.enroll_refill_ms);
    return false;
  }
  auto [it, fresh] = enroll_.try_emplace(address, Bucket{burst, now_ms});
  Bucket& b = it->second;
  if (!fresh) {
    b.tokens = std::min(burst, b.tokens + std::max<std::int64_t>(0, now_ms - b.at_ms) * per_ms);
    b.at_ms = std::max(b.at_ms, now_ms);
  }
  if (b.tokens >= 1) {
    b.tokens -= 1;
    return true;
  }
  ++counts_.refused_enroll_rate;
  if (retry_after_ms)
    *retry_after_ms = static_cast<std::uint32_t>(std::max(1.0, (1 - b.tokens) / per_ms));
  return false;
}

AdmissionCounts Admission::counts() const {
  std::lock_guard lock(mu_);
  return counts_;
}

}  // namespace teduh::server
