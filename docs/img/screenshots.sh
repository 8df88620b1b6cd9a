#!/usr/bin/env bash
# Remakes the HTML report screenshots in docs/img/ from three shipped lineages: the HTML report
# of each (`ckptcheck bisect … --report`), rendered by headless Chromium at 1280 px wide, the
# blank bottom trimmed and the colours reduced to a 256-colour palette so each PNG stays under
# 300 KB. The time on the page is fixed (SOURCE_DATE_EPOCH) so a remake differs only where the
# report does.
#
#   bash docs/img/screenshots.sh            # needs chromium; PYTHON with Pillow to shrink
#
# PYTHON defaults to python3; without Pillow the PNGs are kept as Chromium wrote them.
set -euo pipefail
cd "$(dirname "$0")/../.."
out=docs/img
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
browser=$(command -v chromium || command -v chromium-browser || command -v google-chrome)
python=${PYTHON:-python3}
cargo build --quiet
export SOURCE_DATE_EPOCH=1767225600 # 2026-01-01 00:00 UTC
for lineage in sft-collapse gguf-healthy lora-merge-wrong-scale; do
    # Exit 1 is a lineage that fails, as two of these do.
    target/debug/ckptcheck bisect "testdata/pipelines/$lineage.toml" --report "$tmp/$lineage.html" >/dev/null 2>&1 || [ $? -eq 1 ]
    "$browser" --headless --no-sandbox --disable-gpu --no-first-run --disable-background-networking \
        --disable-component-update --disable-sync --hide-scrollbars --user-data-dir="$tmp/profile" \
        --window-size=1280,4000 --screenshot="$tmp/$lineage.png" "file://$tmp/$lineage.html" >/dev/null 2>&1 || true
    [ -f "$tmp/$lineage.png" ] || { echo "chromium wrote no screenshot of $lineage" >&2; exit 1; }
    if "$python" -c "import PIL" 2>/dev/null; then
        "$python" - "$tmp/$lineage.png" "$out/report-$lineage.png" <<'PY'
import sys
from PIL import Image, ImageChops
img = Image.open(sys.argv[1]).convert("RGB")
# Trim the white below the page's last content, keeping a 24 px margin.
bbox = ImageChops.difference(img, Image.new("RGB", img.size, (255, 255, 255))).getbbox()
if bbox:
    img = img.crop((0, 0, img.width, min(img.height, bbox[3] + 24)))
img.quantize(colors=256, method=Image.Quantize.MEDIANCUT).save(sys.argv[2], optimize=True)
PY
    else
        cp "$tmp/$lineage.png" "$out/report-$lineage.png"
    fi
    echo "$out/report-$lineage.png: $(wc -c < "$out/report-$lineage.png") bytes"
done
