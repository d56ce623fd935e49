#!/usr/bin/env bash
# Correctness on the machine it runs on (the GPU machine, or lavapipe here): greedy generations of
# every fixture checkpoint and the embedded model as JSON, perplexity over the corpus test split, and
# the engine/kernel tests. Usage: bench/gpu_check.sh OUT_DIR FIXTURES_DIR [MODELS...]
# DENO_FLAGS passes extra flags to deno (the GPU run uses a reduced config: --config .device/gpu.json --no-lock).
set -uo pipefail
out=${1:?output dir}
fx=${2:?fixtures dir}
shift 2
models=("$@")
[[ ${#models[@]} -eq 0 ]] && models=(embedded llama2-style-qtip-2bit-hyb llama31-style-qtip-2bit-hyb llama2-style-fp16 llama31-style-fp16)
mkdir -p "$out"
flags=${DENO_FLAGS:-}
for m in "${models[@]}"; do
  if [[ $m == embedded ]]; then dir=models/llama2-qtip-2bit; fam=llama2-style; else dir=$fx/$m; fam=${m%%-qtip*}; fam=${fam%-fp16}; fi
  [[ -d $dir ]] || { echo "skip $m: $dir absent"; continue; }
  for p in p0_genesis p1_chat; do
    ids=$(python3 -c "import json,sys;print(','.join(map(str,json.load(open('$fx/references/prompts.json'))['$fam'][sys.argv[1]]['ids'])))" "$p")
    deno run -A $flags cli/generate.ts --model "$dir" --tokenizer "$([[ -f $dir/tokenizer.json ]] && echo "$dir" || echo "$fx/${fam}-fp16")" \
      --prompt-ids "$ids" --max-tokens 32 --ignore-eos --json >"$out/generate-$m-$p.json" 2>"$out/generate-$m-$p.err"
    echo "$m $p: $(python3 -c "import json;print(json.load(open('$out/generate-$m-$p.json'))['token_ids'])" 2>&1 | head -c 300)"
  done
done
