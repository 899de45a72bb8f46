#include "teduh/core/recovery_kit.h"

extern "C" {
#include <libgfshare.h>
}

#include <fmt/format.h>

#include <algorithm>
#include <array>
#include <cctype>
#include <cstring>
#include <memory>
#include <set>

#include "teduh/core/i18n.h"
#include "teduh/core/ids.h"
#include "teduh/core/sealing.h"
#include "teduh/crypto/stream.h"

namespace teduh::core {
namespace {

constexpr std::string_view kEscrowKeyContext = "tdhescr1";
constexpr std::string_view kSharePrefix = "TRS1";
constexpr char kHexDigits[] = "0123456789ABCDEF";
constexpr std::size_t kBodyBytes = kRecoveryShareBytes - 2;  // before the checksum

// libgfshare draws its polynomial coefficients from this hook, which is
// empty until set: libsodium's generator.
void FillRandom(unsigned char* buffer, unsigned int count) {
  crypto::RandomBytes(std::span<std::uint8_t>(buffer, count));
}

struct GfshareFree {
  void operator()(gfshare_ctx* ctx) const { gfshare_ctx_free(ctx); }  // scrubs its buffers
};
using Gfshare = std::unique_ptr<gfshare_ctx, GfshareFree>;

std::string FingerprintOf(std::span<const std::uint8_t> four) {
  std::string out;
  for (std::uint8_t b : four) {
    out.push_back(kHexDigits[b >> 4]);
    out.push_back(kHexDigits[b & 15]);
  }
  return out;
}

}  // namespace

Outcome<crypto::BoxKeyPair> EscrowKeyPair(const crypto::SecureBuffer& unit_root_sk) {
  if (unit_root_sk.size() != crypto::kSignSecretKeyBytes)
    return Fail(errc::key_missing, Tr("this device does not hold the unit root key"));
  auto pair = crypto::DeriveBoxKeyPair(unit_root_sk.view().first(crypto::kSignSeedBytes),
                                       kEscrowKeyContext, 1);
  if (!pair) return Fail(pair.error());
  return std::move(*pair);
}

Outcome<std::vector<crypto::SecureBuffer>> MakeRecoveryShares(
    const crypto::SecureBuffer& unit_root_sk, unsigned shares, unsigned threshold) {
  if (unit_root_sk.size() != crypto::kSignSecretKeyBytes)
    return Fail(errc::key_missing, Tr("this device does not hold the unit root key"));
  if (threshold < 2 || threshold > shares || shares > kMaxRecoveryShares) {
    return Fail(errc::invalid_argument,
                TrF("a kit needs at least 2 shares to rebuild the key, no more than it has, and "
                    "at most {} shares",
                    kMaxRecoveryShares));
  }
  auto pk = crypto::SignPublicKeyOf(unit_root_sk);
  if (!pk) return Fail(pk.error());
  const auto fp = crypto::Hash(*pk);
  const auto kit = crypto::RandomArray<2>();

  gfshare_fill_rand = FillRandom;
  std::array<unsigned char, kMaxRecoveryShares> numbers{};
  for (unsigned i = 0; i < shares; ++i) numbers[i] = static_cast<unsigned char>(i + 1);
  Gfshare ctx(gfshare_ctx_init_enc(numbers.data(), shares, static_cast<unsigned char>(threshold),
                                   crypto::kSignSeedBytes));
  if (!ctx) return Fail(errc::io_error, Tr("cannot split the key"));
  auto seed = crypto::SecureBuffer::CopyOf(unit_root_sk.view().first(crypto::kSignSeedBytes));
  if (!seed) return Fail(seed.error());
  gfshare_ctx_enc_setsecret(ctx.get(), seed->data());
  seed->Reset();

  std::vector<crypto::SecureBuffer> out;
  for (unsigned i = 0; i < shares; ++i) {
    auto raw = crypto::SecureBuffer::Allocate(kRecoveryShareBytes);
    if (!raw) return Fail(raw.error());
    std::uint8_t* p = raw->data();
    p[0] = static_cast<std::uint8_t>(threshold);
    p[1] = numbers[i];
    p[2] = kit[0];
    p[3] = kit[1];
    std::memcpy(p + 4, fp.data(), 4);
    gfshare_ctx_enc_getshare(ctx.get(), static_cast<unsigned char>(i), p + 8);
    const auto sum = crypto::Hash(raw->view().first(kBodyBytes));
    p[kBodyBytes] = sum[0];
    p[kBodyBytes + 1] = sum[1];
    // "TRS1" then "-XXXX" per two bytes.
    auto text = crypto::SecureBuffer::Allocate(kSharePrefix.size() + kRecoveryShareBytes / 2 * 5);
    if (!text) return Fail(text.error());
    char* t = reinterpret_cast<char*>(text->data());
    std::memcpy(t, kSharePrefix.data(), kSharePrefix.size());
    t += kSharePrefix.size();
    for (std::size_t b = 0; b < kRecoveryShareBytes; ++b) {
      if (b % 2 == 0) *t++ = '-';
      *t++ = kHexDigits[p[b] >> 4];
      *t++ = kHexDigits[p[b] & 15];
    }
    out.push_back(std::move(*text));
  }
  return out;
}

Outcome<RecoveryShare> ParseRecoveryShare(std::string_view text, std::size_t position) {
  const auto not_share = [&] {
    return Fail(
        errc::bad_value,
        TrF("share {} is not a recovery kit share (TRS1-...): check what was typed", position));
  };
  std::size_t i = 0;
  while (i < text.size() && (text[i] == ' ' || text[i] == '\t')) ++i;
  if (text.size() - i < kSharePrefix.size()) return not_share();
  for (std::size_t k = 0; k < kSharePrefix.size(); ++k)
    if (std::toupper(static_cast<unsigned char>(text[i + k])) != kSharePrefix[k])
      return not_share();
  i += kSharePrefix.size();
  auto raw = crypto::SecureBuffer::Allocate(kRecoveryShareBytes);
  if (!raw) return Fail(raw.error());
  std::size_t nibbles = 0;
  for (; i < text.size(); ++i) {
    const char c = text[i];
    if (c == '-' || c == ' ' || c == '\t' || c == '\r' || c == '\n') continue;
    const int v = HexValue(c);
    if (v < 0 || nibbles >= kRecoveryShareBytes * 2) {
      return Fail(errc::bad_value,
                  TrF("share {} has a character that does not belong, or too many: each share "
                      "has 21 groups of 4 digits (0-9, A-F)",
                      position));
    }
    raw->data()[nibbles / 2] |= static_cast<std::uint8_t>(nibbles % 2 == 0 ? v << 4 : v);
    ++nibbles;
  }
  if (nibbles != kRecoveryShareBytes * 2) {
    return Fail(errc::bad_value,
                TrF("share {} has {} digits, not {}: a group is missing or doubled", position,
                    nibbles, kRecoveryShareBytes * 2));
  }
  const std::uint8_t* p = raw->data();
  const auto sum = crypto::Hash(raw->view().first(kBodyBytes));
  if (sum[0] != p[kBodyBytes] || sum[1] != p[kBodyBytes + 1]) {
    return Fail(errc::bad_value,
                TrF("share {} does not match its checksum: a digit was mistyped", position));
  }
  RecoveryShare s;
  s.threshold = p[0];
  s.number = p[1];
  s.kit = static_cast<std::uint16_t>(p[2] << 8 | p[3]);
  s.fingerprint = FingerprintOf(raw->view().subspan(4, 4));
  if (s.threshold < 2 || s.number == 0) return not_share();
  auto y = crypto::SecureBuffer::CopyOf(raw->view().subspan(8, crypto::kSignSeedBytes));
  if (!y) return Fail(y.error());
  s.share = std::move(*y);
  return s;
}

Outcome<unsigned> SharesMissing(std::span<const RecoveryShare> shares,
                                std::string_view fingerprint) {
  if (shares.empty()) return 2u;
  const RecoveryShare& first = shares.front();
  std::set<unsigned> numbers;
  for (std::size_t i = 0; i < shares.size(); ++i) {
    const RecoveryShare& s = shares[i];
    if (s.fingerprint != first.fingerprint) {
      return Fail(errc::bad_value, TrF("share {} belongs to another unit than share 1", i + 1));
    }
    if (s.kit != first.kit || s.threshold != first.threshold) {
      return Fail(errc::bad_value,
                  TrF("share {} comes from another recovery kit than share 1: use shares of one "
                      "kit",
                      i + 1));
    }
    if (!numbers.insert(s.number).second)
      return Fail(errc::bad_value, TrF("share {} was given twice", i + 1));
  }
  if (!fingerprint.empty() && first.fingerprint != fingerprint) {
    return Fail(errc::wrong_unit,
                TrF("these shares belong to another unit (key {}) than the code's ({})",
                    first.fingerprint, fingerprint));
  }
  return numbers.size() >= first.threshold
             ? 0u
             : static_cast<unsigned>(first.threshold - numbers.size());
}

Outcome<crypto::SignKeyPair> RebuildRootKey(std::span<const RecoveryShare> shares,
                                            std::string_view fingerprint) {
  auto missing = SharesMissing(shares, fingerprint);
  if (!missing) return missing.error();
  if (*missing > 0) {
    return Fail(errc::bad_value, TrF("{} more shares are needed: any {} of the kit rebuild the key",
                                     *missing, shares.front().threshold));
  }
  const unsigned k = shares.front().threshold;
  std::array<unsigned char, 255> numbers{};
  for (unsigned i = 0; i < k; ++i) numbers[i] = static_cast<unsigned char>(shares[i].number);
  gfshare_fill_rand = FillRandom;  // gfshare_ctx_free scrubs its buffers with it
  Gfshare ctx(gfshare_ctx_init_dec(numbers.data(), k, crypto::kSignSeedBytes));
  if (!ctx) return Fail(errc::io_error, Tr("cannot rebuild the key"));
  for (unsigned i = 0; i < k; ++i) {
    // libgfshare takes a non-const pointer; it only reads the share.
    gfshare_ctx_dec_giveshare(ctx.get(), static_cast<unsigned char>(i),
                              const_cast<unsigned char*>(shares[i].share.data()));
  }
  auto seed = crypto::SecureBuffer::Allocate(crypto::kSignSeedBytes);
  if (!seed) return Fail(seed.error());
  gfshare_ctx_dec_extract(ctx.get(), seed->data());
  auto pair = crypto::SignKeyPairFromSeed(seed->view());
  seed->Reset();
  if (!pair) return Fail(pair.error());
  if (KeyFingerprint(std::string_view(reinterpret_cast<const char*>(pair->public_key.data()),
                                      pair->public_key.size())) != shares.front().fingerprint) {
    return Fail(errc::bad_value,
                Tr("the shares do not rebuild the unit's key: one was mistyped in a way its "
                   "checksum did not catch; type them again"));
  }
  return std::move(*pair);
}

std::string RecoveryPage(std::string_view unit_name, std::string_view share_text, unsigned number,
                         unsigned shares, unsigned threshold, std::string_view made_on) {
  const auto escape = [](std::string_view in) {
    std::string out;
    for (char c : in) {
      switch (c) {
        case '&':
          out += "&amp;";
          break;
        case '<':
          out += "&lt;";
          break;
        case '>':
          out += "&gt;";
          break;
        case '"':
          out += "&quot;";
          break;
        default:
          out.push_back(c);
      }
    }
    return out;
  };
  // Five groups per line, so that the share is copied line by line.
  std::string lines;
  std::size_t groups = 0;
  for (char c : share_text) {
    if (c == '-' && ++groups % 5 == 0) {
      lines += "<br>";
      continue;
    }
    lines.push_back(c == '-' ? ' ' : c);
  }
  return fmt::format(
      "<!DOCTYPE html>\n<html><head><meta charset=\"utf-8\">"
      "<title>Teduh recovery kit {0}/{1}</title>"
      "<style>body{{font-family:sans-serif;margin:2cm}}"
      ".share{{font-family:monospace;font-size:20pt;letter-spacing:2px;border:2px solid #000;"
      "padding:1cm;margin:1cm 0;line-height:1.6}}</style></head><body>\n"
      "<h1>Teduh &mdash; {2}</h1>\n"
      "<h2>Kit pemulihan: bagian {0} dari {1} &middot; Recovery kit: share {0} of {1}</h2>\n"
      "<p>Dibuat {3}. {4} bagian mana pun dari {1} memulihkan kunci induk unit. Simpan di "
      "tempat terkunci, terpisah dari bagian lain. Jangan difoto, dipindai, atau dikirim "
      "lewat pesan.</p>\n"
      "<p>Made {3}. Any {4} of the {1} shares rebuild the unit root key. Keep it locked away, "
      "apart from the other shares. Never photograph, scan or message it.</p>\n"
      "<div class=\"share\">{5}</div>\n"
      "<p>teduh init --recover</p>\n</body></html>\n",
      number, shares, escape(unit_name), escape(made_on), threshold, lines);
}

}  // namespace teduh::core
