// The recovery kit (core/recovery_kit.h): any threshold of a kit's shares
// rebuild the unit root key, fewer say how many are missing, a mistyped share
// is named, and shares of another kit or unit are refused.
#include "teduh/core/recovery_kit.h"

#include <gtest/gtest.h>
#include <libgfshare.h>

#include <string>
#include <vector>

#include "teduh/core/backup_file.h"
#include "teduh/core/error.h"
#include "teduh/core/sealing.h"

namespace teduh::core {
namespace {

std::string Text(const crypto::SecureBuffer& b) {
  return std::string(reinterpret_cast<const char*>(b.data()), b.size());
}

std::string Pk(const crypto::SignPublicKey& pk) {
  return std::string(reinterpret_cast<const char*>(pk.data()), pk.size());
}

class RecoveryKitTest : public ::testing::Test {
 protected:
  void SetUp() override {
    ASSERT_FALSE(crypto::Init());
    auto root = crypto::GenerateSignKeyPair();
    ASSERT_TRUE(root);
    root_ = std::move(*root);
    auto kit = MakeRecoveryShares(root_.secret_key, 5, 3);
    ASSERT_TRUE(kit) << kit.error().message;
    for (const auto& s : *kit) texts_.push_back(Text(s));
  }

  std::vector<RecoveryShare> Parse(const std::vector<std::size_t>& which) {
    std::vector<RecoveryShare> out;
    for (std::size_t i : which) {
      auto s = ParseRecoveryShare(texts_[i], out.size() + 1);
      EXPECT_TRUE(s) << s.error().message;
      if (s) out.push_back(std::move(*s));
    }
    return out;
  }

  std::string Fingerprint() const { return KeyFingerprint(Pk(root_.public_key)); }

  crypto::SignKeyPair root_;
  std::vector<std::string> texts_;
};

TEST_F(RecoveryKitTest, SharesAreTextAPersonCanCopy) {
  ASSERT_EQ(texts_.size(), 5u);
  for (const auto& t : texts_) {
    EXPECT_EQ(t.substr(0, 5), "TRS1-");
    EXPECT_EQ(t.size(), 4u + 21u * 5u);
    for (char c : t.substr(4))
      EXPECT_TRUE(c == '-' || std::isxdigit(static_cast<unsigned char>(c)));
  }
  // Lower case, spaces and line breaks are read as the same share.
  std::string typed;
  for (char c : texts_[2]) typed.push_back(c == '-' ? ' ' : static_cast<char>(std::tolower(c)));
  typed.insert(40, "\n");
  auto s = ParseRecoveryShare(typed, 1);
  ASSERT_TRUE(s) << s.error().message;
  EXPECT_EQ(s->number, 3u);
  EXPECT_EQ(s->threshold, 3u);
  EXPECT_EQ(s->fingerprint, Fingerprint());
}

// A recovery runs in a new process, where no kit was made first.
TEST_F(RecoveryKitTest, RebuildsInAProcessThatMadeNoKit) {
  gfshare_fill_rand = nullptr;  // as libgfshare starts
  auto rebuilt = RebuildRootKey(Parse({0, 1, 2}), Fingerprint());
  ASSERT_TRUE(rebuilt) << rebuilt.error().message;
  EXPECT_EQ(Pk(rebuilt->public_key), Pk(root_.public_key));
}

TEST_F(RecoveryKitTest, AnyThreeOfFiveRebuildTheKeyAndTwoDoNot) {
  int combos = 0;
  for (std::size_t a = 0; a < 5; ++a)
    for (std::size_t b = a + 1; b < 5; ++b)
      for (std::size_t c = b + 1; c < 5; ++c) {
        auto shares = Parse({c, a, b});  // in any order
        auto rebuilt = RebuildRootKey(shares, Fingerprint());
        ASSERT_TRUE(rebuilt) << rebuilt.error().message;
        EXPECT_EQ(Pk(rebuilt->public_key), Pk(root_.public_key));
        EXPECT_EQ(std::string(reinterpret_cast<const char*>(rebuilt->secret_key.data()), 64),
                  std::string(reinterpret_cast<const char*>(root_.secret_key.data()), 64));
        ++combos;
      }
  EXPECT_EQ(combos, 10);

  auto two = Parse({0, 4});
  auto missing = SharesMissing(two, "");
  ASSERT_TRUE(missing);
  EXPECT_EQ(*missing, 1u);
  auto rebuilt = RebuildRootKey(two, "");
  ASSERT_FALSE(rebuilt);
  EXPECT_EQ(rebuilt.error().code, errc::bad_value);
  EXPECT_NE(rebuilt.error().message.find("1 more shares are needed"), std::string::npos)
      << rebuilt.error().message;
  // Four shares rebuild it too (the first three are used).
  auto four = Parse({0, 1, 2, 3});
  auto more = RebuildRootKey(four, "");
  ASSERT_TRUE(more);
  EXPECT_EQ(Pk(more->public_key), Pk(root_.public_key));
}

TEST_F(RecoveryKitTest, AChangedCharacterIsNamedByItsChecksum) {
  for (std::size_t pos : std::vector<std::size_t>{5, 30, 60, texts_[1].size() - 1}) {
    std::string typo = texts_[1];
    if (typo[pos] == '-') ++pos;
    typo[pos] = typo[pos] == '7' ? '8' : '7';
    auto s = ParseRecoveryShare(typo, 2);
    ASSERT_FALSE(s) << "a typo at " << pos << " was not caught";
    EXPECT_EQ(s.error().code, errc::bad_value);
    EXPECT_NE(s.error().message.find("share 2"), std::string::npos) << s.error().message;
    EXPECT_NE(s.error().message.find("checksum"), std::string::npos) << s.error().message;
  }
  // A group left out, a character that is not a digit, something else entirely.
  std::string short_one = texts_[0];
  short_one.erase(10, 5);
  EXPECT_FALSE(ParseRecoveryShare(short_one, 1));
  std::string letter = texts_[0];
  letter[12] = 'Z';
  EXPECT_FALSE(ParseRecoveryShare(letter, 1));
  auto backup = ParseRecoveryShare("TBS1-0000-1111", 3);
  ASSERT_FALSE(backup);
  EXPECT_NE(backup.error().message.find("share 3"), std::string::npos);
}

TEST_F(RecoveryKitTest, SharesOfAnotherKitOrUnitOrGivenTwiceAreRefused) {
  // Another kit of the same key: never mixed.
  auto again = MakeRecoveryShares(root_.secret_key, 5, 3);
  ASSERT_TRUE(again);
  auto mixed = Parse({0, 1});
  auto other_kit = ParseRecoveryShare(Text((*again)[2]), 3);
  ASSERT_TRUE(other_kit);
  mixed.push_back(std::move(*other_kit));
  auto r = RebuildRootKey(mixed, "");
  ASSERT_FALSE(r);
  EXPECT_NE(r.error().message.find("share 3 comes from another recovery kit"), std::string::npos)
      << r.error().message;

  // Another unit.
  auto stranger = crypto::GenerateSignKeyPair();
  ASSERT_TRUE(stranger);
  auto foreign = MakeRecoveryShares(stranger->secret_key, 5, 3);
  ASSERT_TRUE(foreign);
  auto from_two_units = Parse({0});
  auto f = ParseRecoveryShare(Text((*foreign)[1]), 2);
  ASSERT_TRUE(f);
  from_two_units.push_back(std::move(*f));
  auto two_units = SharesMissing(from_two_units, "");
  ASSERT_FALSE(two_units);
  EXPECT_NE(two_units.error().message.find("share 2 belongs to another unit"), std::string::npos);

  // A whole kit of another unit than the one expected.
  std::vector<RecoveryShare> theirs;
  for (std::size_t i = 0; i < 3; ++i)
    theirs.push_back(*ParseRecoveryShare(Text((*foreign)[i]), i + 1));
  auto wrong = RebuildRootKey(theirs, Fingerprint());
  ASSERT_FALSE(wrong);
  EXPECT_EQ(wrong.error().code, errc::wrong_unit);

  auto twice = Parse({0, 2, 2});
  auto dup = RebuildRootKey(twice, "");
  ASSERT_FALSE(dup);
  EXPECT_NE(dup.error().message.find("share 3 was given twice"), std::string::npos);
}

TEST_F(RecoveryKitTest, ImpossibleKitsAreRefused) {
  for (auto [n, k] : std::vector<std::pair<unsigned, unsigned>>{{5, 1}, {3, 4}, {17, 3}, {1, 1}}) {
    auto kit = MakeRecoveryShares(root_.secret_key, n, k);
    ASSERT_FALSE(kit) << n << " " << k;
    EXPECT_EQ(kit.error().code, errc::invalid_argument);
  }
  crypto::SecureBuffer none;
  auto no_key = MakeRecoveryShares(none, 5, 3);
  ASSERT_FALSE(no_key);
  EXPECT_EQ(no_key.error().code, errc::key_missing);
}

TEST_F(RecoveryKitTest, TheEscrowKeyIsTheRootKeysOwnAndNotTheBackupKey) {
  auto a = EscrowKeyPair(root_.secret_key);
  auto b = EscrowKeyPair(root_.secret_key);
  auto backup = BackupKeyPair(root_.secret_key);
  ASSERT_TRUE(a && b && backup);
  EXPECT_EQ(a->public_key, b->public_key);
  EXPECT_NE(a->public_key, backup->public_key);
  auto stranger = crypto::GenerateSignKeyPair();
  ASSERT_TRUE(stranger);
  auto c = EscrowKeyPair(stranger->secret_key);
  ASSERT_TRUE(c);
  EXPECT_NE(a->public_key, c->public_key);
}

TEST_F(RecoveryKitTest, ThePrintablePageHoldsTheShareAndNoScript) {
  const std::string page =
      RecoveryPage("UPTD PPA <Kota>", texts_[0], 1, 5, 3, "2026-12-04 10:00 WITA");
  EXPECT_NE(page.find("UPTD PPA &lt;Kota&gt;"), std::string::npos);
  EXPECT_EQ(page.find("<script"), std::string::npos);
  // Every group of the share is on the page, in order.
  std::size_t at = page.find("class=\"share\"");
  ASSERT_NE(at, std::string::npos);
  for (std::size_t g = 5; g < texts_[0].size(); g += 5) {
    at = page.find(texts_[0].substr(g, 4), at);
    ASSERT_NE(at, std::string::npos) << "group " << texts_[0].substr(g, 4);
  }
  EXPECT_NE(page.find("bagian 1 dari 5"), std::string::npos);
}

}  // namespace
}  // namespace teduh::core
