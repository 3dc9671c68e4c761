#!/usr/bin/env bash
# Regenerates the golden pair tests/data/golden/pretraining_sample_text_document.{bin,idx} with Megatron-LM's
# own tools/preprocess_data.py, at the tag that matches the pinned megatron-core, then checks every input and
# output against the checksums below (tests/data/test_prepare_pretraining.py checks the committed files
# against the same lines, so the pair cannot change without this script's knowledge).
#
#   git clone --branch core_v0.15.3 https://github.com/NVIDIA/Megatron-LM /tmp/Megatron-LM
#   tests/data/golden/regenerate.sh /tmp/Megatron-LM     # from the repository root, with the project's venv
#
# The sample holds an empty document, non-ASCII text and special-token strings on purpose.
set -euo pipefail

MEGATRON_LM_TAG=core_v0.15.3
MEGATRON_LM_COMMIT=309ffca6a40553362d44fd17efc56b772fa1aa44
MEGATRON_LM=${1:?usage: $0 MEGATRON_LM_CHECKOUT (at tag $MEGATRON_LM_TAG)}

cd "$(dirname "$0")/../../.."
head=$(git -C "$MEGATRON_LM" rev-parse HEAD)
if [[ $head != "$MEGATRON_LM_COMMIT" ]]; then
  echo "error: $MEGATRON_LM is at $head, not $MEGATRON_LM_TAG ($MEGATRON_LM_COMMIT)" >&2
  exit 2
fi

PYTHONPATH=$MEGATRON_LM python "$MEGATRON_LM/tools/preprocess_data.py" \
  --input tests/data/golden/pretraining_sample.jsonl \
  --output-prefix tests/data/golden/pretraining_sample \
  --tokenizer-type HuggingFaceTokenizer --tokenizer-model models/tokenizers/tiny \
  --workers 1 --append-eod

sha256sum --check <<'CHECKSUMS'
52c1ac3c6b1af3e393b716790682c29f8348e123e2ded6d3be238475b3985ebb  tests/data/golden/pretraining_sample.jsonl
5d471829c58a3d36d6d3f8389ccd4da1941895c8f88a26a6932229c2179369b0  models/tokenizers/tiny/tokenizer.json
615638f7855d23f67448ab801445c3bd5dc48a52a5c809447751bb8f2abf163f  models/tokenizers/tiny/tokenizer_config.json
f62d0cfbbcd980dc7d1d827dc125b8af7efa4f6e0dce2ec44429ea8f56f6238b  models/tokenizers/tiny/special_tokens_map.json
a211013ea5bd0ea0bed9fff824b7bfe284d985f3660f65f2504c8cdbb487bdb5  tests/data/golden/pretraining_sample_text_document.bin
dca28a8ad553e0c3960ac9c2e26eb0dbc066820d914a2dc139418c1542d26edd  tests/data/golden/pretraining_sample_text_document.idx
CHECKSUMS
