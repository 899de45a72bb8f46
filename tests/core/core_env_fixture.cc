// Initialises libsodium once for every test in core_test.
#include <gtest/gtest.h>

#include "teduh/crypto/crypto.h"

namespace {
class CryptoEnvironment : public ::testing::Environment {
 public:
  void SetUp() override { ASSERT_FALSE(teduh::crypto::Init()); }
};
const auto* const kEnv = ::testing::AddGlobalTestEnvironment(new CryptoEnvironment);
}  // namespace
