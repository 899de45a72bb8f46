// The unit's recovery kit and key escrow (docs/SECURITY.md, "Recovery kit").
//
// The kit splits the unit root key's 32-byte seed into n Shamir shares of
// which any k rebuild it (Debian's libgfshare, GF(2^8); the arithmetic is the
// library's). Each share is text a person can copy by hand: "TRS1" and 21
// groups of four hex digits, of
//
//   threshold (1) || share number (1) || kit id (2) || unit fingerprint (4) ||
//   share (32) || checksum (2)
//
// The unit fingerprint is the first 4 bytes of BLAKE2b-256(unit root public
// key), the one enrollment codes carry; the kit id is random per kit, so
// shares of two kits are never mixed; the checksum is the first 2 bytes of
// BLAKE2b-256 of the 40 bytes before it, so a mistyped share is named.
//
// The root key alone cannot read a case: the class keys are on the devices.
// So the server keeps every class key epoch sealed to the unit escrow key, an
// X25519 key derived from the root seed (EscrowKeyPair), signed by the root
// key (keys.proto EscrowGrant). An admin device rebuilt from a kit opens them.
#pragma once

#include <cstdint>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "teduh/core/outcome.h"
#include "teduh/crypto/crypto.h"

namespace teduh::core {

inline constexpr unsigned kMaxRecoveryShares = 16;
inline constexpr std::size_t kRecoveryShareBytes = 42;

// The unit escrow key pair: derived from the unit root key's seed
// (crypto_kdf, context "tdhescr1"), so exactly the root key's holders have it.
// errc::key_missing if `unit_root_sk` is not a 64-byte Ed25519 secret key.
Outcome<crypto::BoxKeyPair> EscrowKeyPair(const crypto::SecureBuffer& unit_root_sk);

// The kit: `shares` texts (guarded memory), any `threshold` of which rebuild
// the root key. errc::invalid_argument unless 2 <= threshold <= shares <= 16.
Outcome<std::vector<crypto::SecureBuffer>> MakeRecoveryShares(
    const crypto::SecureBuffer& unit_root_sk, unsigned shares, unsigned threshold);

struct RecoveryShare {
  unsigned threshold = 0;
  unsigned number = 0;  // 1..255, the share's x coordinate
  std::uint16_t kit = 0;
  std::string fingerprint;     // 8 upper-case hex digits, as core::KeyFingerprint
  crypto::SecureBuffer share;  // 32 B
};

// One share as typed (spaces, dashes and case ignored). `position` (from 1)
// names it in errors: errc::bad_value if it is not a share or its checksum
// does not match (a digit was mistyped).
Outcome<RecoveryShare> ParseRecoveryShare(std::string_view text, std::size_t position);

// What a set of shares still lacks: 0 when it reaches its threshold.
// errc::bad_value if the shares come from different kits or units, or one is
// given twice; errc::wrong_unit if `fingerprint` (when not empty) is not theirs.
Outcome<unsigned> SharesMissing(std::span<const RecoveryShare> shares,
                                std::string_view fingerprint);

// Rebuilds the unit root key. Errors as SharesMissing, and errc::bad_value
// naming how many are missing when there are too few, or when the rebuilt key
// is not the unit's (a share mistyped in a way its checksum missed).
Outcome<crypto::SignKeyPair> RebuildRootKey(std::span<const RecoveryShare> shares,
                                            std::string_view fingerprint);

// One printable HTML page for a share's holder (both languages; no script).
std::string RecoveryPage(std::string_view unit_name, std::string_view share_text, unsigned number,
                         unsigned shares, unsigned threshold, std::string_view made_on);

}  // namespace teduh::core
