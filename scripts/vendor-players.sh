#!/usr/bin/env bash
# Copy the pinned hls.js build (tests/players/package-lock.json) into origin/static/vendor, so the
# demo page is served by the origin itself: `make run` needs no npm and no external network.
# Run after changing the pinned version; commit the result. tests/test_players_vendor.py checks
# that the committed copy is byte-identical to the pinned npm build.
set -euo pipefail
cd "$(dirname "$0")/.."

players=tests/players
if [ ! -d "$players/node_modules/hls.js" ]; then
  (cd "$players" && npm ci --no-audit --no-fund --loglevel=error)
fi
src="$players/node_modules/hls.js"
dst=origin/static/vendor
mkdir -p "$dst"
install -m 644 "$src/dist/hls.min.js" "$dst/hls.min.js"
install -m 644 "$src/LICENSE" "$dst/hls.js-LICENSE.txt"
# Apache-2.0 section 4(a): recipients get a copy of the License itself (hls.js ships only its header).
install -m 644 /usr/share/common-licenses/Apache-2.0 "$dst/Apache-2.0.txt"
version=$(node -p "require('./$src/package.json').version")
cat > "$dst/NOTICE.txt" <<NOTICE
Third-party code served by the tonearm origin's demo page
=========================================================

hls.min.js
  hls.js ${version} (npm package "hls.js", file dist/hls.min.js, unmodified)
  https://github.com/video-dev/hls.js
  Copyright (c) 2017 Dailymotion (http://www.dailymotion.com)
  Licensed under the Apache License, Version 2.0: see hls.js-LICENSE.txt and Apache-2.0.txt.
  The minified build embeds babel's regenerator runtime (MIT, Copyright (c) 2014-present,
  Facebook, Inc.), whose notice is kept in the file's comments.

Refresh with scripts/vendor-players.sh after changing tests/players/package.json.
NOTICE
echo "vendored hls.js ${version} into $dst"
