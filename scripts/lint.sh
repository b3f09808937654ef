#!/usr/bin/env bash
# Mechanical checks: banned C calls (curl's list of unsafe string functions and
# friends) in production code. Exits non-zero with the offending lines.
set -uo pipefail
cd "$(dirname "$0")/.."
banned='\b(strcpy|strcat|sprintf|vsprintf|gets|atoi|atol|atoll|strtok|strncpy|strncat|tmpnam|mktemp)\s*\('
hits=$(grep -nE "$banned" $(git ls-files '*.c' '*.h' 2>/dev/null || find lib storage identity ca sds meshcore cli -name '*.[ch]') 2>/dev/null \
       | grep -v '^tests/' || true)
if [ -n "$hits" ]; then
  echo "banned calls (see docs/STYLE notes: use snprintf, strtol/strtoll, memcpy with lengths):"
  echo "$hits"
  exit 1
fi
echo "lint: no banned calls"
