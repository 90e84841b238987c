# Phase 2 on 2 CPU cores, offline: fine-tune a tiny locally built ModernBERT (random init: it exercises the path,
# it measures nothing about pretraining) on the signs and masking of config/train_akkadian_cpu.py (docs/pretrained.md).
# python hf_encoder.py tiny --out=out-hf-tiny-base && python train.py config/finetune_hf_tiny_cpu.py
out_dir = 'out-akkadian-hf-tiny'
dataset = 'akkadian'
arch = 'hf'
init_from = 'hf:out-hf-tiny-base'
block_size = 64
doc_mask = True                 # every fragment is its own [CLS] ... [SEP] row
mask_rate_max = 0.75
batch_size = 32
learning_rate = 2e-3
min_lr = 2e-4
weight_decay = 0.01
beta2 = 0.99
max_iters = 600
eval_interval = 200
eval_iters = 10
log_interval = 20
device = 'cpu'
artifact_layers = '0,1,2'       # every layer of the 2-layer tiny model
