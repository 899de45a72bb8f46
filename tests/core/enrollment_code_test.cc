// Enrollment codes as an admin reads them out and an officer types them
// (docs/PROTOCOL.md §2): both ends read them with one parser.
#include "teduh/core/enrollment_code.h"

#include <gtest/gtest.h>

#include <string>

#include "teduh/core/sealing.h"
#include "teduh/crypto/crypto.h"

namespace teduh::core {
namespace {

class EnrollmentCodeTest : public ::testing::Test {
 protected:
  void SetUp() override { ASSERT_FALSE(crypto::Init()); }
};

TEST_F(EnrollmentCodeTest, AFreshCodeReadsBackAsItsHashAndFingerprint) {
  const std::string root_pk(32, '\x07');
  NewCode made = MakeEnrollmentCode(root_pk);
  ASSERT_EQ(made.code.size(), 4 * 4 + 3 + 1 + 8) << made.code;
  auto parsed = ParseEnrollmentCode(made.code);
  ASSERT_TRUE(parsed);
  EXPECT_EQ(parsed->hash, made.hash);
  EXPECT_EQ(parsed->fingerprint, KeyFingerprint(root_pk));

  NewCode bootstrap = MakeEnrollmentCode({});
  ASSERT_EQ(bootstrap.code.size(), 4 * 4 + 3) << bootstrap.code;
  auto first = ParseEnrollmentCode(bootstrap.code);
  ASSERT_TRUE(first);
  EXPECT_EQ(first->hash, bootstrap.hash);
  EXPECT_TRUE(first->fingerprint.empty());
}

TEST_F(EnrollmentCodeTest, TypedLooselyItIsTheSameCode) {
  NewCode made = MakeEnrollmentCode(std::string(32, '\x01'));
  std::string loose;
  std::size_t chars = 0;
  for (char c : made.code) {
    if (c == '-') {
      loose += "  ";
      continue;
    }
    // Lower case, and in the random part the look-alikes an officer may
    // read off a printed code (the fingerprint after it is hex).
    char t = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
    if (chars++ < 16) {
      if (c == '1') t = 'l';
      if (c == '0') t = 'O';
    }
    loose += t;
  }
  auto parsed = ParseEnrollmentCode(loose);
  ASSERT_TRUE(parsed) << loose;
  EXPECT_EQ(parsed->hash, made.hash);
  EXPECT_EQ(parsed->fingerprint, KeyFingerprint(std::string(32, '\x01')));
}

TEST_F(EnrollmentCodeTest, WhatIsNotACodeIsRefused) {
  for (const char* typed : {
           "",                               // nothing
           "ABCD-EFGH-JKMN-PQR",             // a character short
           "ABCD-EFGH-JKMN-PQRSX",           // one too many
           "ABCD-EFGH-JKMN-PQRU",            // U is not Crockford's
           "TEDUH-WRONG-CODE",               // not a code at all
           "ABCD-EFGH-JKMN-PQRS-1A2B3C4",    // a fingerprint digit short
           "ABCD-EFGH-JKMN-PQRS-1A2B3C4G",   // a fingerprint that is not hex
           "ABCD-EFGH-JKMN-PQRS-1A2B3C4D5",  // a fingerprint too long
       }) {
    auto parsed = ParseEnrollmentCode(typed);
    ASSERT_FALSE(parsed) << typed;
    EXPECT_EQ(parsed.error(), make_error_code(errc::bad_value)) << typed;
  }
  // Past the bound, even spaces are not read.
  EXPECT_FALSE(
      ParseEnrollmentCode("ABCD-EFGH-JKMN-PQRS" + std::string(kMaxEnrollmentCodeChars, ' ')));
  EXPECT_TRUE(ParseEnrollmentCode("ABCD-EFGH-JKMN-PQRS"));
}

}  // namespace
}  // namespace teduh::core
