// See backup_file.h for the format. Every length read from a file is checked
// against what is left of it before it is used (the reader is fuzzable).
#include "teduh/core/backup_file.h"

#include <fcntl.h>
#include <unistd.h>

#include <cctype>
#include <cerrno>
#include <fstream>
#include <iterator>
#include <optional>
#include <utility>

#include "teduh/core/i18n.h"
#include "teduh/crypto/stream.h"

namespace teduh::core {
namespace {

namespace fs = std::filesystem;
namespace kv1 = teduh::keys::v1;

constexpr std::string_view kBackupKeyContext = "tdhbkup1";  // 8 characters (crypto_kdf)
constexpr std::size_t kHashBytes = 32;

crypto::ByteView View(std::string_view s) {
  return {reinterpret_cast<const std::uint8_t*>(s.data()), s.size()};
}

void PutU32(std::string* out, std::uint32_t v) {
  for (int shift = 24; shift >= 0; shift -= 8) out->push_back(static_cast<char>(v >> shift));
}

std::uint32_t GetU32(std::string_view in) {
  std::uint32_t v = 0;
  for (int i = 0; i < 4; ++i)
    v = (v << 8) | static_cast<unsigned char>(in[static_cast<std::size_t>(i)]);
  return v;
}

Failure Damaged(std::string why) {
  return Fail(errc::integrity, TrF("the backup file is damaged or altered: {}", why));
}

// The parts of a file that passed the structure checks.
struct Parsed {
  kv1::BackupHeader header;
  std::string_view header_bytes;
  std::vector<std::string_view> chunks;
};

Outcome<Parsed> Parse(std::string_view file) {
  Parsed p;
  if (file.size() < kBackupMagic.size() || file.substr(0, kBackupMagic.size()) != kBackupMagic)
    return Fail(errc::integrity, Tr("this is not a Teduh backup file"));
  if (file.size() < kBackupMagic.size() + 4 + kHashBytes) return Damaged(Tr("it is cut short"));
  // The hash first: any damage anywhere is found before a field is trusted.
  const std::string_view body = file.substr(0, file.size() - kHashBytes);
  const auto want = crypto::Hash(View(body));
  const std::string_view got = file.substr(file.size() - kHashBytes);
  if (!crypto::ConstantTimeEqual(crypto::ByteView(want.data(), want.size()), View(got)))
    return Damaged(Tr("its checksum does not match (cut short or changed)"));
  std::string_view rest = body.substr(kBackupMagic.size());
  const std::uint32_t n = GetU32(rest);
  rest.remove_prefix(4);
  if (n == 0 || n > kMaxBackupHeaderBytes || n > rest.size())
    return Damaged(Tr("its header has an impossible length"));
  p.header_bytes = rest.substr(0, n);
  rest.remove_prefix(n);
  if (!p.header.ParseFromArray(p.header_bytes.data(), static_cast<int>(p.header_bytes.size())) ||
      p.header.format() != 1 || p.header.backup_pk().size() != crypto::kBoxPublicKeyBytes ||
      p.header.sealed_file_key().size() != crypto::kStreamKeyBytes + crypto::kSealOverhead ||
      p.header.stream_header().size() != crypto::kStreamHeaderBytes ||
      p.header.chunk_bytes() == 0 || p.header.chunk_bytes() > kBackupChunkBytes ||
      p.header.audit_head().size() != kHashBytes)
    return Damaged(Tr("its header does not read"));
  std::uint64_t plain = 0;
  while (!rest.empty()) {
    if (rest.size() < 4) return Damaged(Tr("a chunk is cut short"));
    const std::uint32_t m = GetU32(rest);
    rest.remove_prefix(4);
    if (m < crypto::kStreamOverhead || m > p.header.chunk_bytes() + crypto::kStreamOverhead ||
        m > rest.size())
      return Damaged(Tr("a chunk has an impossible length"));
    p.chunks.push_back(rest.substr(0, m));
    plain += m - crypto::kStreamOverhead;
    rest.remove_prefix(m);
  }
  if (p.chunks.empty() || plain != p.header.plain_bytes())
    return Damaged(Tr("its chunks do not add up to the snapshot's size"));
  return p;
}

Outcome<std::string> ReadWhole(const fs::path& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return Fail(errc::io_error, TrF("cannot read {}", path.string()));
  std::string bytes((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  if (in.bad()) return Fail(errc::io_error, TrF("cannot read {}", path.string()));
  return bytes;
}

Outcome<void> WriteDurably(const fs::path& path, std::string_view bytes) {
  const fs::path tmp = path.string() + ".partial";
  const int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
  if (fd < 0) return Fail(errc::io_error, TrF("cannot write {}", tmp.string()));
  std::size_t done = 0;
  int err = 0;
  while (done < bytes.size()) {
    const ssize_t w = ::write(fd, bytes.data() + done, bytes.size() - done);
    if (w < 0) {
      if (errno == EINTR) continue;
      err = errno;
      break;
    }
    done += static_cast<std::size_t>(w);
  }
  if (err == 0 && ::fsync(fd) != 0) err = errno;
  ::close(fd);
  if (err == 0 && ::rename(tmp.c_str(), path.c_str()) != 0) err = errno;
  if (err != 0) {
    ::unlink(tmp.c_str());
    if (err == ENOSPC || err == EDQUOT)
      return Fail(errc::disk_full, TrF("no space left to write {}", path.string()));
    return Fail(errc::io_error, TrF("cannot write {}", path.string()));
  }
  // The rename itself is durable once the folder is synced.
  const fs::path dir = path.has_parent_path() ? path.parent_path() : fs::path(".");
  if (const int dfd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC); dfd >= 0) {
    ::fsync(dfd);
    ::close(dfd);
  }
  return {};
}

}  // namespace

Outcome<crypto::BoxKeyPair> BackupKeyPair(const crypto::SecureBuffer& unit_root_sk) {
  if (unit_root_sk.size() != crypto::kSignSecretKeyBytes)
    return Fail(errc::key_missing, Tr("this device does not hold the unit root key"));
  // An Ed25519 secret key is its 32-byte seed followed by its public key.
  auto pair = crypto::DeriveBoxKeyPair(unit_root_sk.view().first(32), kBackupKeyContext, 1);
  if (!pair) return Fail(pair.error());
  return std::move(*pair);
}

Outcome<void> WriteBackupFile(const fs::path& path, kv1::BackupHeader header,
                              std::string_view snapshot) {
  if (header.backup_pk().size() != crypto::kBoxPublicKeyBytes)
    return Fail(errc::invalid_argument, Tr("the unit backup key is not set"));
  auto file_key = crypto::RandomSecret(crypto::kStreamKeyBytes);
  if (!file_key) return Fail(file_key.error());
  auto sealed_key = crypto::SealTo(View(header.backup_pk()), file_key->view());
  if (!sealed_key) return Fail(sealed_key.error());
  crypto::StreamHeader stream_header{};
  auto sealer = crypto::StreamSealer::Start(*file_key, &stream_header);
  if (!sealer) return Fail(sealer.error());
  file_key->Reset();
  header.set_format(1);
  header.set_sealed_file_key(std::string(sealed_key->begin(), sealed_key->end()));
  header.set_stream_header(std::string(stream_header.begin(), stream_header.end()));
  header.set_plain_bytes(snapshot.size());
  header.set_chunk_bytes(kBackupChunkBytes);
  const std::string header_bytes = header.SerializeAsString();
  const auto ad = crypto::Hash(View(header_bytes));

  crypto::Bytes out;
  out.reserve(snapshot.size() + snapshot.size() / kBackupChunkBytes * 32 + header_bytes.size() +
              256);
  std::string prefix(kBackupMagic);
  PutU32(&prefix, static_cast<std::uint32_t>(header_bytes.size()));
  prefix += header_bytes;
  out.insert(out.end(), prefix.begin(), prefix.end());
  std::size_t at = 0;
  do {
    const std::size_t n = std::min<std::size_t>(kBackupChunkBytes, snapshot.size() - at);
    const bool last = at + n == snapshot.size();
    const std::size_t len_at = out.size();
    out.resize(len_at + 4);
    if (auto ec = sealer->Push(View(snapshot.substr(at, n)), crypto::ByteView(ad.data(), ad.size()),
                               last, &out))
      return Fail(ec);
    const auto m = static_cast<std::uint32_t>(out.size() - len_at - 4);
    for (int i = 0; i < 4; ++i)
      out[len_at + static_cast<std::size_t>(i)] = static_cast<std::uint8_t>(m >> (24 - 8 * i));
    at += n;
  } while (at < snapshot.size());
  const auto hash = crypto::Hash(crypto::ByteView(out.data(), out.size()));
  out.insert(out.end(), hash.begin(), hash.end());
  return WriteDurably(path,
                      std::string_view(reinterpret_cast<const char*>(out.data()), out.size()));
}

Outcome<BackupFileInfo> VerifyBackupBytes(std::string_view file) {
  auto parsed = Parse(file);
  if (!parsed) return parsed.error();
  return BackupFileInfo{parsed->header, file.size()};
}

Outcome<BackupFileInfo> VerifyBackupFile(const fs::path& path) {
  auto bytes = ReadWhole(path);
  if (!bytes) return bytes.error();
  return VerifyBackupBytes(*bytes);
}

Outcome<BackupFileInfo> OpenBackupFile(const fs::path& path, const crypto::BoxKeyPair& key,
                                       std::string* snapshot) {
  auto bytes = ReadWhole(path);
  if (!bytes) return bytes.error();
  return OpenBackupBytes(*bytes, key, snapshot);
}

Outcome<BackupFileInfo> OpenBackupBytes(std::string_view file, const crypto::BoxKeyPair& key,
                                        std::string* snapshot) {
  auto parsed = Parse(file);
  if (!parsed) return parsed.error();
  const kv1::BackupHeader& h = parsed->header;
  if (std::string_view(reinterpret_cast<const char*>(key.public_key.data()),
                       key.public_key.size()) != h.backup_pk())
    return Fail(errc::wrong_unit, Tr("the backup is sealed to another unit's backup key"));
  auto file_key = crypto::OpenSealed(key.public_key, key.secret_key, View(h.sealed_file_key()));
  if (!file_key) return Damaged(Tr("its file key does not open"));
  auto opener = crypto::StreamOpener::Start(*file_key, View(h.stream_header()));
  file_key->Reset();
  if (!opener) return Damaged(Tr("its stream does not open"));
  const auto ad = crypto::Hash(View(parsed->header_bytes));
  snapshot->clear();
  snapshot->reserve(h.plain_bytes());
  bool final = false;
  for (std::size_t i = 0; i < parsed->chunks.size(); ++i) {
    if (final) return Damaged(Tr("chunks follow its last one"));
    crypto::SecureBuffer plain;
    if (opener->Pull(View(parsed->chunks[i]), crypto::ByteView(ad.data(), ad.size()), &plain,
                     &final))
      return Damaged(TrF("chunk {} does not open", i + 1));
    snapshot->append(reinterpret_cast<const char*>(plain.data()), plain.size());
  }
  if (!final) return Damaged(Tr("it ends before its last chunk"));
  return BackupFileInfo{h, file.size()};
}

std::string BackupKeyMessage(std::string_view unit_id, std::string_view backup_pk) {
  std::string m = "teduh-backup-key-v1";
  PutU32(&m, static_cast<std::uint32_t>(unit_id.size()));
  m += unit_id;
  m += backup_pk;
  return m;
}

namespace {
constexpr std::string_view kHexDigits = "0123456789abcdef";
std::string Hex(crypto::ByteView bytes) {
  std::string out;
  for (std::uint8_t b : bytes) {
    out.push_back(kHexDigits[b >> 4]);
    out.push_back(kHexDigits[b & 15]);
  }
  return out;
}
// Hex digits only (spaces and dashes skipped); nullopt on any other
// character. It may read a secret: nothing is left behind but the result,
// which the caller wipes.
std::optional<std::string> Unhex(std::string_view text) {
  std::string out;
  out.reserve(text.size() / 2 + 1);  // no reallocation leaves a copy behind
  int high = -1;
  for (char c : text) {
    if (c == ' ' || c == '-' || c == '\n' || c == '\r' || c == '\t') continue;
    const auto at = kHexDigits.find(static_cast<char>(std::tolower(static_cast<unsigned char>(c))));
    if (at == std::string_view::npos) {
      crypto::Wipe(out);
      return std::nullopt;
    }
    if (high < 0) {
      high = static_cast<int>(at);
    } else {
      out.push_back(static_cast<char>(high * 16 + static_cast<int>(at)));
      high = -1;
    }
  }
  if (high >= 0) {
    crypto::Wipe(out);
    return std::nullopt;
  }
  return out;
}
}  // namespace

std::string FormatBackupKeyToken(std::string_view backup_pk, std::string_view signature) {
  return "TBK1-" + Hex(View(backup_pk)) + Hex(View(signature));
}

Outcome<std::pair<std::string, std::string>> ParseBackupKeyToken(std::string_view token) {
  const auto bad = [] {
    return Fail(errc::bad_value, Tr("this is not a backup key token (TBK1-...)"));
  };
  if (token.size() < 5 || token.substr(0, 5) != "TBK1-") return bad();
  auto bytes = Unhex(token.substr(5));
  if (!bytes || bytes->size() != crypto::kBoxPublicKeyBytes + crypto::kSignatureBytes) return bad();
  return std::make_pair(bytes->substr(0, crypto::kBoxPublicKeyBytes),
                        bytes->substr(crypto::kBoxPublicKeyBytes));
}

std::string FormatBackupSecret(const crypto::SecureBuffer& secret_key) {
  const auto sum = crypto::Hash(secret_key.view());
  // Written in place into one buffer sized up front: no temporary copies.
  std::string out;
  out.reserve(4 + (secret_key.size() + 2) * 2 + (secret_key.size() + 2) / 2);
  out = "TBS1";
  std::size_t n = 0;
  auto put = [&](std::uint8_t b) {
    for (std::uint8_t nibble :
         {static_cast<std::uint8_t>(b >> 4), static_cast<std::uint8_t>(b & 15)}) {
      if (n++ % 4 == 0) out.push_back('-');
      out.push_back(kHexDigits[nibble]);
    }
  };
  for (std::uint8_t b : secret_key.view()) put(b);
  put(sum[0]);
  put(sum[1]);
  return out;
}

Outcome<crypto::BoxKeyPair> ParseBackupSecret(std::string_view text) {
  while (!text.empty() && (text.front() == ' ' || text.front() == '\n')) text.remove_prefix(1);
  if (text.size() < 4 || (text.substr(0, 4) != "TBS1" && text.substr(0, 4) != "tbs1"))
    return Fail(errc::bad_value, Tr("this is not a backup secret key (TBS1-...)"));
  auto bytes = Unhex(text.substr(4));
  if (!bytes || bytes->size() != crypto::kBoxSecretKeyBytes + 2) {
    if (bytes) crypto::Wipe(*bytes);
    return Fail(errc::bad_value, Tr("the backup secret key has the wrong number of digits"));
  }
  auto secret = crypto::SecureBuffer::CopyOf(View(std::string_view(*bytes).substr(0, 32)));
  const std::string sum = bytes->substr(32);
  crypto::Wipe(*bytes);
  if (!secret) return Fail(secret.error());
  const auto want = crypto::Hash(secret->view());
  if (std::string_view(reinterpret_cast<const char*>(want.data()), 2) != sum)
    return Fail(errc::bad_value,
                Tr("the backup secret key's checksum does not match: a digit was mistyped"));
  auto pk = crypto::BoxPublicKeyOf(*secret);
  if (!pk) return Fail(pk.error());
  return crypto::BoxKeyPair{*pk, std::move(*secret)};
}

}  // namespace teduh::core
