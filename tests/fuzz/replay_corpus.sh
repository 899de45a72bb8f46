#!/usr/bin/env bash
# Makes a corpus of hostile inputs (empty, random, truncated and bit-flipped
# protobuf) and replays it through the frame decoder; any crash fails the test.
set -euo pipefail
bin=$1
dir=$(mktemp -d)
trap 'rm -rf "$dir"' EXIT
: >"$dir/empty"
printf '\x52\x00' >"$dir/empty-push"
printf '\xa2\x01\x05\x0a\x03abc' >"$dir/push-short-change"
printf '\xa2\x01\xff\xff\xff\xff\x0f' >"$dir/huge-length"
printf '\x8a\x01\x00' >"$dir/wipe-empty-order"
printf '\x8a\x01\x04\x0a\x02\x0a\x00' >"$dir/wipe-short-ids"
printf '\x92\x01\x03\x0a\x01\x41' >"$dir/wipe-receipt-short"
printf '\x92\x02\x12\x0a\x10AAAAAAAAAAAAAAAA' >"$dir/revoke-without-order"
printf '\xba\x03\x04\x1a\x02\x0a\x00' >"$dir/rekey-reseal-without-place"
printf '\xb2\x03\x02\x0a\x00' >"$dir/rekey-set-short-case"
printf '\x08\xff\xff\xff\xff\xff\xff\xff\xff\xff\x01' >"$dir/varint-overflow"
for i in $(seq 1 200); do
  head -c $((RANDOM % 600)) /dev/urandom >"$dir/random-$i"
done
# A frame nested deeply, to check recursion limits.
python3 -c "import sys; sys.stdout.buffer.write(b'\xa2\x01\x80\x01' + b'\x0a\x7e' * 300)" >"$dir/nested" 2>/dev/null || true
"$bin" "$dir"/*
