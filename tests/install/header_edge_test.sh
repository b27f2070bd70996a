#!/usr/bin/env bash
# The server's public headers (include/green/http/) reach no runtime internals: a translation
# unit that includes any of them alone pulls in no green/detail/ header (the park/wait-queue
# machinery behind the channel templates), nothing from runtime/ or server/, and no llhttp.
# g++ -H lists every header a translation unit opens.
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
cxx=${CXX:-g++}
status=0
for header in "$root"/include/green/http/*.h; do
  name=green/http/$(basename "$header")
  opened=$(echo "#include <$name>" | "$cxx" -std=c++20 -H -fsyntax-only -I "$root/include" -x c++ - 2>&1 >/dev/null |
           sed -n 's/^\.\+ //p')
  bad=$(echo "$opened" | grep -E 'green/detail/|/runtime/|/server/|llhttp' || true)
  if [ -n "$bad" ]; then
    echo "$name pulls in internals:"; echo "$bad" | sed 's/^/  /'; status=1
  fi
done
[ $status = 0 ] && echo "ok: $(ls "$root"/include/green/http/*.h | wc -l) headers in include/green/http reach no internals"
exit $status
