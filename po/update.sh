#!/usr/bin/env bash
# Refreshes po/id.po from the sources: every string marked Tr("..."),
# TrC("ctx", "...") or TrF("...", ...) becomes a msgid (new ones untranslated
# until someone writes their Indonesian). `po/update.sh --check` changes
# nothing and fails if a string lacks a translation or a translation's {}
# placeholders differ from its English (tests/i18n runs it).
set -euo pipefail
cd "$(dirname "$0")/.."
pot=$(mktemp --suffix=.pot)
merged=$(mktemp --suffix=.po)
trap 'rm -f "$pot" "$merged" "$merged.mo"' EXIT
git ls-files -- '*.cc' '*.h' 2>/dev/null | grep -v '^tests/' | sort > "$pot.list" ||
  find crypto field-core sync-server tools -name '*.cc' -o -name '*.h' | sort > "$pot.list"
LC_ALL=C.UTF-8 xgettext --language=C++ --from-code=UTF-8 --no-location --sort-output \
  --keyword= --keyword=Tr:1,1t --keyword=Tr:2,2t --keyword=TrC:1c,2,2t --keyword=TrC:2c,3,3t \
  --keyword=TrF:1 --keyword=TrFIn:2 \
  --omit-header -o "$pot" -f "$pot.list"
rm -f "$pot.list"
if [ "${1:-}" = --check ]; then
  msgmerge --quiet --no-fuzzy-matching -o "$merged" po/id.po "$pot"
  # Every msgid of the sources has an Indonesian translation...
  msgcmp po/id.po "$pot" 2>&1 | grep -v "warning: this message is not used" | grep . && exit 1
  # ...is a well-formed catalog...
  msgfmt --check -o "$merged.mo" "$merged"
  # ...and keeps the {} placeholders of its English, in order (fmt formats
  # the translation with the English's arguments).
  python3 - "$merged" <<'PY'
import re, sys
text = open(sys.argv[1], encoding="utf-8").read()
def unquote(lines):
    return "".join(re.findall(r'"((?:[^"\\]|\\.)*)"', lines)).encode().decode("unicode_escape").encode("latin-1").decode("utf-8")
bad = 0
for block in text.split("\n\n"):
    m = re.search(r'^msgid (.*?)^msgstr (.*)', block, re.S | re.M)
    if not m:
        continue
    msgid, msgstr = unquote(m.group(1)), unquote(m.group(2))
    if not msgid or not msgstr:
        continue
    ph = lambda s: re.findall(r"\{[^{}]*\}", s.replace("{{", "").replace("}}", ""))
    if ph(msgid) != ph(msgstr):
        print(f"placeholders differ: {msgid!r} -> {msgstr!r}")
        bad += 1
sys.exit(1 if bad else 0)
PY
  echo "po/id.po: every message translated, placeholders match"
else
  msgmerge --quiet --update --backup=none --no-fuzzy-matching --sort-output po/id.po "$pot"
  untranslated=$(msgattrib --untranslated po/id.po | grep -c '^msgid ' || true)
  echo "po/id.po updated; untranslated: $((untranslated > 0 ? untranslated - 1 : 0))"
fi
