# The main job at full size (GPU): the "Aeneas twin" sign-level encoder restoring Akkadian.
# python prepare/akkadian.py --projects=rinap,saao,riao,ribo,suhu,atae && python train.py config/train_akkadian.py
out_dir = 'out-akkadian'
dataset = 'akkadian'
arch = 'encoder'
# Aeneas torso (docs/akkadian.md): 16 layers, d_model 384, d_ff 1536, 8 heads of d_kv 32,
# RoPE, pre-norm RMSNorm, no biases, GeGLU
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
doc_mask = True                 # attention never crosses fragment boundaries
mask_rate_max = 0.75            # per-sequence mask rate ~ U(0, 0.75), as Aeneas trains (BERT 80/10/10: train.py's)
# logits only at 62.5% of each micro-batch's positions, the targets first: with rates ~ U(0, 0.75) the batch's
# target fraction has mean <= 0.375 and sd 0.75 / sqrt(12 x 32) = 0.038, so 0.625 is 6.5 sd above it
mlm_logit_budget = 0.625
batch_size = 32
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
compile = True
