#!/usr/bin/env bash
# Makes a corpus of hostile backup files (empty, random, the magic followed by
# impossible lengths, framed chunks of junk) and replays it through the backup
# file reader; any crash fails the test.
set -euo pipefail
bin=$1
dir=$(mktemp -d)
trap 'rm -rf "$dir"' EXIT
: >"$dir/empty"
printf 'TEDUHBK1' >"$dir/magic-only"
printf 'TEDUHBK1\xff\xff\xff\xff' >"$dir/huge-header"
printf 'TEDUHBK1\x00\x00\x00\x00' >"$dir/empty-header"
python3 - "$dir" <<'PY'
import os, random, struct, sys
d = sys.argv[1]
random.seed(7)
def frame(b): return struct.pack(">I", len(b)) + b
for i in range(60):
    header = os.urandom(random.randrange(0, 300))
    chunks = b"".join(frame(os.urandom(random.randrange(0, 200))) for _ in range(random.randrange(0, 4)))
    body = b"TEDUHBK1" + frame(header) + chunks
    if i % 3 == 0:
        body += struct.pack(">I", random.choice([0, 16, 17, 1 << 31]))  # a chunk cut short
    open(os.path.join(d, "framed-%d" % i), "wb").write(body)
PY
for i in $(seq 1 100); do
  head -c $((RANDOM % 800)) /dev/urandom >"$dir/random-$i"
done
"$bin" "$dir"/*
