// Fuzz target for the decoder of every frame that arrives from the network.
// With clang: cmake -DTEDUH_BUILD_FUZZ=ON -DCMAKE_CXX_COMPILER=clang++ builds a
// libFuzzer binary (frame_fuzz). Without it, the same target is built with a
// replay driver (frame_fuzz_replay) that runs the files given on the command line,
// and the test suite runs it over a generated corpus of edge cases.
#include <cstddef>
#include <cstdint>
#include <string_view>

#include "teduh/core/frame_codec.h"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  static const bool quiet = (teduh::core::SilenceProtobufLog(), true);
  (void)quiet;
  teduh::core::FrameLimits limits;
  limits.max_frame_bytes = 1 << 20;
  std::string message;
  auto frame = teduh::core::DecodeFrame(std::string_view(reinterpret_cast<const char*>(data), size),
                                        limits, &message);
  if (frame) {
    // A frame that passed validation must re-encode and decode to the same thing.
    auto again = teduh::core::DecodeFrame(teduh::core::EncodeFrame(*frame), limits);
    if (!again) __builtin_trap();
  }
  return 0;
}
