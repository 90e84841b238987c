# The main job at full size: the "Aeneas twin" sign-level encoder restoring Akkadian (GPU).
# python prepare/akkadian.py --projects=rinap,saao,riao,ribo,suhu,atae
# python train.py config/train_akkadian.py [--batch_size=auto]
out_dir = 'out-akkadian'
dataset = 'akkadian'
arch = 'encoder'
# Aeneas torso (docs/akkadian.md): 16 layers, d_model 384, d_ff 1536,
# 8 heads of d_kv 32 (attention width 256), RoPE, pre-norm RMSNorm, no biases, GeGLU, MLP head
n_layer = 16
n_embd = 384
d_ff = 1536
n_head = 8
d_kv = 32
norm = 'rmsnorm'
mlp = 'geglu'
pos = 'rope'
bias = False
dropout = 0.1
block_size = 512
doc_mask = True          # attention never crosses fragment boundaries
# masked LM: 15% of the preserved/damaged signs, BERT 80/10/10; span_mean > 0 masks geometric spans
mask_rate = 0.15                # (used only when mask_rate_max = 0)
mask_rate_max = 0.75            # per-sequence mask rate ~ U(0, 0.75), as Aeneas trains
mask_replace = 0.8
mask_random = 0.1
span_mean = 0.0
# logits only at 62.5% of each micro-batch's positions, the targets first: with per-sequence rates ~ U(0, 0.75) the
# batch's target fraction has mean <= 0.375 and sd 0.75 / sqrt(12 x 32) = 0.038, so 0.625 is 6.5 sd above it
mlm_logit_budget = 0.625
# AdamW 3e-4 with warm-up and cosine decay
batch_size = 32
gradient_accumulation_steps = 1
learning_rate = 3e-4
min_lr = 3e-5
weight_decay = 0.01
beta2 = 0.999
warmup_iters = 1000
max_iters = 50000
eval_interval = 1000
eval_iters = 50
log_interval = 50
save_artifacts = True
compile = True                  # torch.compile (a GPU config); --compile=False for eager
