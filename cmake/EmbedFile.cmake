# cmake -DIN=file -DOUT=file.cc -DSYMBOL=kName -P EmbedFile.cmake
# Writes a C++ source that defines `extern const unsigned char SYMBOL[]` and
# `extern const std::size_t SYMBOL##Size` in teduh::core with IN's bytes.
file(READ "${IN}" hex HEX)
string(LENGTH "${hex}" hex_len)
math(EXPR size "${hex_len} / 2")
string(REGEX REPLACE "([0-9a-f][0-9a-f])" "0x\\1," bytes "${hex}")
string(REGEX REPLACE "((0x[0-9a-f][0-9a-f],){16})" "\\1\n" bytes "${bytes}")
file(WRITE "${OUT}.tmp"
  "// Generated from ${IN} by cmake/EmbedFile.cmake; do not edit.\n"
  "#include <cstddef>\n"
  "namespace teduh::core {\n"
  "extern const unsigned char ${SYMBOL}[] = {\n${bytes}\n0x00};\n"
  "extern const std::size_t ${SYMBOL}Size = ${size};\n"
  "}  // namespace teduh::core\n")
file(RENAME "${OUT}.tmp" "${OUT}")
