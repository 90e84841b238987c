# Phase 2 at full size (GPU): fine-tune mmBERT-small (Marone et al. 2025; ModernBERT, 22 layers x 384, Gemma 2
# tokenizer) on the signs and masking of config/train_akkadian.py (docs/pretrained.md); --init_from=hf:DIR: a local copy.
out_dir = 'out-akkadian-mmbert'
dataset = 'akkadian'
arch = 'hf'
init_from = 'hf:jhu-clsp/mmBERT-small'
block_size = 256                # signs; about 2-3 pieces each, well inside mmBERT's 8,192 positions
doc_mask = True
mask_rate_max = 0.75
# mmBERT pretrained with lr 8e-4, betas (0.9, 0.95), wd 8e-5: fine-tuning takes a smaller peak
batch_size = 32
learning_rate = 5e-5
min_lr = 5e-6
weight_decay = 0.01
beta2 = 0.98
warmup_iters = 500
max_iters = 10000
eval_interval = 500
eval_iters = 50
log_interval = 50
save_artifacts = True
artifact_layers = '0,6,11,16,22'  # mmBERT-small has 22 layers (0 = embedding output)
