#!/bin/bash
# The English pre-training variants of the README (issue 3), each at the number of steps that two hours of the
# 2-core development machine allow it, then SST-2 fine-tunes (1k and 5k labels) of each against random weights of
# the same architecture and vocabulary. Five runs side by side: meant for a GPU (about 13 minutes on one H100);
# on a CPU run one variant at a time.
#
#     bash benchmarks/pretrain_variants.sh [OUT_DIR] [DATA_DIR]      # defaults: runs/en-variants, ../shared/data
#
# Needs runs/vocab-enwiki-8k (`bertkit vocab --corpus DATA/wikitext/enwiki_2015/enwiki_part0.txt.gz --size 8000`)
# and all-MiniLM-L6-v2's package (its vocab.txt is bert-base-uncased's 30k vocabulary). Writes OUT/progress.log.
set -u
cd "$(dirname "$0")/.."
W=${1:-runs/en-variants}; DATA=${2:-${BERTKIT_DATA:-../shared/data}}
PY=${PYTHON:-.venv/bin/python}
mkdir -p "$W/ft"
UNCASED=$($PY -c "from bertkit import packaged_model_dir; print(packaged_model_dir())")
C=$DATA/wikitext/enwiki_2015/enwiki_part0.txt.gz
# the recipe of the 13,000-step CPU run (runs/en-mlm-13k/pretrain_config.json without corpus, vocabulary and out)
cat > "$W/en-mini.json" <<'JSON'
{
 "size": "mini",
 "objective": "roberta",
 "format": "paragraphs",
 "max_seq_length": 128,
 "batch_size": 32,
 "eval_fraction": 0.01,
 "eval_instances": 2000,
 "masking": {
  "mlm_probability": 0.15,
  "max_predictions": 20,
  "whole_word": false,
  "duplication": 0,
  "seed": 12345
 },
 "train": {
  "steps": 13000,
  "lr": 0.001,
  "warmup": 400.0,
  "weight_decay": 0.01,
  "adam_eps": 1e-06,
  "max_grad_norm": 1.0,
  "grad_accum": 1,
  "seed": 12345,
  "bf16": "auto",
  "log_every": 10,
  "eval_every": 1000,
  "save_every": 1000,
  "keep_checkpoints": 2,
  "threads": 3,
  "best_metric": "",
  "keep_freed_memory": false,
  "extra": {}
 },
 "model_overrides": {
  "hidden_dropout_prob": 0.0,
  "attention_probs_dropout_prob": 0.0
 },
 "generator_overrides": {},
 "rtd_weight": 50.0
}
JSON
PT="$PY -m bertkit.cli pretrain --config $W/en-mini.json --corpus $C --format paragraphs --size mini --batch-size 32
    --lr 1e-3 --warmup 400 --threads 3 --eval-every 1000 --save-every 1000 --log-every 50"
FT() { # model init n tag
  local args="--max-train-examples 1000 --epochs 10 --lr 3e-4"
  [ "$3" = 5k ] && args="--max-train-examples 5000 --epochs 3 --lr 1e-4"
  $PY -m bertkit.cli finetune --task sst2 --model "$1" --init "$2" --data "$DATA/glue/SST-2" --out "$W/ft/$4-$2-$3" \
      --threads 2 $args > "$W/ft/$4-$2-$3.log" 2>&1
  echo "$(date +%T) ft $4 $2 $3: $(tail -1 "$W/ft/$4-$2-$3.log")" >> "$W/progress.log"
}
variant() { # tag steps pretrain-flags...
  local tag=$1 steps=$2; shift 2
  $PT --out "$W/$tag" --steps "$steps" "$@" > "$W/$tag.log" 2>&1
  echo "$(date +%T) pretrain $tag done (exit $?): $(tail -1 "$W/$tag.log")" >> "$W/progress.log"
  FT "$W/$tag" pretrained 1k "$tag" & FT "$W/$tag" pretrained 5k "$tag" & wait
}
shards_of_A() { until ls "$W"/A/data/*/eval/meta.json "$W"/A/data/*/train/meta.json >/dev/null 2>&1; do sleep 3; done; }
echo "$(date +%T) start" >> "$W/progress.log"
( variant A 13000 --vocab runs/vocab-enwiki-8k --objective roberta --whole-word
  FT "$W/A" random 1k v8k & FT "$W/A" random 5k v8k & wait ) &
( variant B 9000 --vocab "$UNCASED" --objective roberta --whole-word  # 30k vocabulary: 1.8x slower a step here
  FT "$W/B" random 1k v30k & FT "$W/B" random 5k v30k & wait ) &
( shards_of_A; mkdir -p "$W/C" && cp -al "$W/A/data" "$W/C/"  # the same packed instances, built once
  variant C 11000 --vocab runs/vocab-enwiki-8k --objective electra ) &
( shards_of_A; mkdir -p "$W/E" && cp -al "$W/A/data" "$W/E/"
  variant E 13000 --vocab runs/vocab-enwiki-8k --objective roberta ) &
( variant D 13000 --vocab runs/vocab-enwiki-8k --objective bert ) &
wait
echo "$(date +%T) all done" >> "$W/progress.log"
