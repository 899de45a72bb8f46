// The server backup file (core/backup_file.h): what an admin relies on is
// that a backup opens only with the unit's backup key, that any damage or
// tampering is found (with the key, and as far as a checksum can without
// it), and that a typed secret key with a mistake is named, not used.
#include "teduh/core/backup_file.h"

#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <iterator>

#include "teduh/core/ids.h"
#include "teduh/crypto/stream.h"

namespace teduh::core {
namespace {

namespace fs = std::filesystem;
namespace kv1 = teduh::keys::v1;

std::string Str(crypto::ByteView b) {
  return std::string(reinterpret_cast<const char*>(b.data()), b.size());
}

class BackupFileTest : public ::testing::Test {
 protected:
  void SetUp() override {
    ASSERT_FALSE(crypto::Init());
    dir_ = fs::temp_directory_path() / ("teduh-backup-" + ToHex(NewId()));
    fs::create_directories(dir_);
    root_ = std::move(*crypto::GenerateSignKeyPair());
    auto pair = BackupKeyPair(root_.secret_key);
    ASSERT_TRUE(pair);
    key_ = std::move(*pair);
    snapshot_.resize(kBackupChunkBytes * 2 + 12345);
    for (std::size_t i = 0; i < snapshot_.size(); ++i)
      snapshot_[i] = static_cast<char>((i * 7919) % 251);
  }
  void TearDown() override { fs::remove_all(dir_); }

  kv1::BackupHeader Header() const {
    kv1::BackupHeader h;
    h.set_unit_id("unit-1");
    h.set_server_id(std::string(16, 's'));
    h.set_generation(42);
    h.set_created_ms(1'750'000'000'000);
    h.set_audit_index(7);
    h.set_audit_head(std::string(32, 'h'));
    h.set_schema_version(5);
    h.set_backup_pk(Str(key_.public_key));
    return h;
  }

  std::string Write() {
    const fs::path p = dir_ / "b.tbk";
    auto w = WriteBackupFile(p, Header(), snapshot_);
    EXPECT_TRUE(w) << (w ? "" : w.error().message);
    std::ifstream in(p, std::ios::binary);
    return std::string((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  }

  // The file's parts, and the file rebuilt from them with a fresh checksum
  // (what someone who alters a backup on purpose does).
  struct Layout {
    std::string header;
    std::vector<std::string> chunks;
  };
  static std::uint32_t U32(std::string_view s, std::size_t at) {
    std::uint32_t v = 0;
    for (int i = 0; i < 4; ++i)
      v = (v << 8) | static_cast<unsigned char>(s[at + static_cast<std::size_t>(i)]);
    return v;
  }
  static Layout Split(const std::string& file) {
    Layout l;
    std::size_t at = kBackupMagic.size();
    const std::uint32_t n = U32(file, at);
    l.header = file.substr(at + 4, n);
    at += 4 + n;
    while (at < file.size() - 32) {
      const std::uint32_t m = U32(file, at);
      l.chunks.push_back(file.substr(at + 4, m));
      at += 4 + m;
    }
    return l;
  }
  static std::string Join(const Layout& l) {
    std::string out(kBackupMagic);
    auto put = [&](std::string_view part) {
      const auto n = static_cast<std::uint32_t>(part.size());
      for (int shift = 24; shift >= 0; shift -= 8) out.push_back(static_cast<char>(n >> shift));
      out += part;
    };
    put(l.header);
    for (const auto& c : l.chunks) put(c);
    const auto h = crypto::Hash(
        crypto::ByteView(reinterpret_cast<const std::uint8_t*>(out.data()), out.size()));
    out.append(reinterpret_cast<const char*>(h.data()), h.size());
    return out;
  }

  fs::path dir_;
  crypto::SignKeyPair root_;
  crypto::BoxKeyPair key_;
  std::string snapshot_;
};

TEST_F(BackupFileTest, ABackupOpensWithTheUnitsKeyToTheSameSnapshot) {
  const std::string file = Write();
  auto info = VerifyBackupBytes(file);
  ASSERT_TRUE(info) << info.error().message;
  EXPECT_EQ(info->header.unit_id(), "unit-1");
  EXPECT_EQ(info->header.audit_index(), 7u);
  EXPECT_EQ(info->header.plain_bytes(), snapshot_.size());
  std::string out;
  auto opened = OpenBackupBytes(file, key_, &out);
  ASSERT_TRUE(opened) << opened.error().message;
  EXPECT_EQ(out, snapshot_);
  EXPECT_EQ(file.find(snapshot_.substr(1000, 64)), std::string::npos) << "the snapshot is sealed";
  EXPECT_FALSE(fs::exists(dir_ / "b.tbk.partial"));
}

TEST_F(BackupFileTest, TheBackupKeyFollowsTheUnitRootKey) {
  auto again = BackupKeyPair(root_.secret_key);
  ASSERT_TRUE(again);
  EXPECT_EQ(again->public_key, key_.public_key);
  auto other_root = crypto::GenerateSignKeyPair();
  auto other = BackupKeyPair(other_root->secret_key);
  ASSERT_TRUE(other);
  EXPECT_NE(other->public_key, key_.public_key);
  // Another unit's key opens nothing.
  const std::string file = Write();
  std::string out;
  auto opened = OpenBackupBytes(file, *other, &out);
  ASSERT_FALSE(opened);
  EXPECT_EQ(opened.error().code, make_error_code(errc::wrong_unit));
  EXPECT_TRUE(out.empty());
}

TEST_F(BackupFileTest, ATruncatedBackupIsRefusedAtEveryLength) {
  const std::string file = Write();
  std::string out;
  for (std::size_t len : {std::size_t{0}, std::size_t{3}, kBackupMagic.size(), std::size_t{40},
                          std::size_t{200}, file.size() / 2, file.size() - 33, file.size() - 1}) {
    auto v = VerifyBackupBytes(std::string_view(file).substr(0, len));
    ASSERT_FALSE(v) << len;
    EXPECT_EQ(v.error().code, make_error_code(errc::integrity)) << len;
    EXPECT_FALSE(OpenBackupBytes(std::string_view(file).substr(0, len), key_, &out)) << len;
  }
}

TEST_F(BackupFileTest, AnyChangedByteIsFoundWithoutTheKey) {
  const std::string file = Write();
  for (std::size_t at : {std::size_t{0}, std::size_t{9}, std::size_t{30}, std::size_t{120},
                         file.size() / 3, file.size() - 40, file.size() - 1}) {
    std::string bad = file;
    bad[at] = static_cast<char>(bad[at] ^ 0x01);
    auto v = VerifyBackupBytes(bad);
    ASSERT_FALSE(v) << at;
    EXPECT_EQ(v.error().code, make_error_code(errc::integrity)) << at;
    EXPECT_FALSE(v.error().message.empty());
  }
}

TEST_F(BackupFileTest, AlteringContentAndFixingTheChecksumStillDoesNotOpen) {
  const Layout good = Split(Write());
  ASSERT_EQ(good.chunks.size(), 3u);
  std::string out;
  {  // a chunk's byte changed
    Layout l = good;
    l.chunks[1][100] ^= 0x10;
    const std::string file = Join(l);
    EXPECT_TRUE(VerifyBackupBytes(file)) << "the checksum alone cannot tell";
    auto r = OpenBackupBytes(file, key_, &out);
    ASSERT_FALSE(r);
    EXPECT_EQ(r.error().code, make_error_code(errc::integrity));
  }
  {  // chunks swapped
    Layout l = good;
    std::swap(l.chunks[0], l.chunks[1]);
    EXPECT_FALSE(OpenBackupBytes(Join(l), key_, &out));
  }
  {  // the last chunk dropped (and the size in the header left as it was)
    Layout l = good;
    l.chunks.pop_back();
    EXPECT_FALSE(OpenBackupBytes(Join(l), key_, &out));
  }
  {  // the header changed: another generation claimed
    Layout l = good;
    kv1::BackupHeader h;
    ASSERT_TRUE(h.ParseFromString(l.header));
    h.set_generation(43);
    l.header = h.SerializeAsString();
    EXPECT_FALSE(OpenBackupBytes(Join(l), key_, &out));
  }
  {  // the header of another backup moved onto these chunks
    const fs::path p = dir_ / "other.tbk";
    ASSERT_TRUE(WriteBackupFile(p, Header(), snapshot_));
    std::ifstream in(p, std::ios::binary);
    Layout other = Split(std::string((std::istreambuf_iterator<char>(in)), {}));
    Layout l = good;
    l.header = other.header;
    EXPECT_FALSE(OpenBackupBytes(Join(l), key_, &out));
  }
}

TEST_F(BackupFileTest, NoFileIsLeftWhenTheBackupCannotBeWritten) {
  kv1::BackupHeader h = Header();
  h.clear_backup_pk();
  EXPECT_FALSE(WriteBackupFile(dir_ / "none.tbk", h, snapshot_));
  EXPECT_FALSE(fs::exists(dir_ / "none.tbk"));
  auto w = WriteBackupFile(dir_ / "missing-folder" / "b.tbk", Header(), snapshot_);
  ASSERT_FALSE(w);
  EXPECT_EQ(w.error().code, make_error_code(errc::io_error));
}

TEST_F(BackupFileTest, TheSecretKeyAsTextReadsBackAndAMistypedDigitIsNamed) {
  const std::string text = FormatBackupSecret(key_.secret_key);
  EXPECT_EQ(text.substr(0, 5), "TBS1-");
  auto back = ParseBackupSecret(text);
  ASSERT_TRUE(back) << back.error().message;
  EXPECT_EQ(back->public_key, key_.public_key);
  // Typed by hand: upper case, spaces instead of dashes.
  std::string typed = text;
  for (char& c : typed)
    c = c == '-' ? ' ' : static_cast<char>(std::toupper(static_cast<unsigned char>(c)));
  EXPECT_TRUE(ParseBackupSecret(typed));
  std::string mistyped = text;
  mistyped[7] = mistyped[7] == '0' ? '1' : '0';
  auto bad = ParseBackupSecret(mistyped);
  ASSERT_FALSE(bad);
  EXPECT_NE(bad.error().message.find("checksum"), std::string::npos);
  EXPECT_FALSE(ParseBackupSecret(text.substr(0, text.size() - 5)));
  EXPECT_FALSE(ParseBackupSecret("TBK1-00"));
}

TEST_F(BackupFileTest, TheKeyTokenCarriesTheKeyAndSignature) {
  const std::string pk = Str(key_.public_key);
  const std::string sig(64, 'x');
  auto parsed = ParseBackupKeyToken(FormatBackupKeyToken(pk, sig));
  ASSERT_TRUE(parsed);
  EXPECT_EQ(parsed->first, pk);
  EXPECT_EQ(parsed->second, sig);
  EXPECT_FALSE(ParseBackupKeyToken("TBK1-abcd"));
  EXPECT_FALSE(ParseBackupKeyToken("TBS1-" + std::string(192, '0')));
  EXPECT_NE(BackupKeyMessage("unit-1", pk), BackupKeyMessage("unit-2", pk));
}

}  // namespace
}  // namespace teduh::core
