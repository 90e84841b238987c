# MDLM (Sahoo et al. 2024) on WikiText-103, reproducing the original 6-GPU run (seed 001): DiT 12 x 768, 12 heads,
# context 1024, batch 4 per GPU x 6 GPUs = 24 global, lr 1e-4 with warm-up and cosine decay, 50k steps, bf16,
# eval every 5k steps; sample with 128 steps (sample.py's default).
# python prepare/wikitext103.py && torchrun --standalone --nproc_per_node=6 train.py config/mdlm.py
# (one GPU: python train.py config/mdlm.py gives the same 24-sequence global batch by accumulation)
# config/mdlm_atat.py differs from this file only in the importance-aware flags.
out_dir = 'out-wiki-mdlm'
dataset = 'wikitext103'
arch = 'mdlm'
n_layer = 12
n_head = 12
n_embd = 768
block_size = 1024
cond_dim = 128
dropout = 0.1
bias = False                    # MDLM's DiT: qkv / out projections without bias, LayerNorm without bias
norm = 'layernorm'
mlp = 'gelu'
pos = 'rope'
time_cond = False               # MDLM default; what makes ddpm_cache valid
# importance-aware options: all off for plain MDLM
importance = False
adaptive_masking = False
curriculum = False
batch_size = 4
gradient_accumulation_steps = 6 # in total over the processes: 6 GPUs x 1, or 1 GPU x 6
max_iters = 50000
learning_rate = 1e-4
min_lr = 1e-5
warmup_iters = 2500             # MDLM's warm-up length
weight_decay = 0.0              # MDLM: AdamW, wd 0, betas (0.9, 0.999)
beta2 = 0.999
grad_clip = 1.0
ema_decay = 0.9999              # MDLM: EMA of the weights, used by evaluate.py / sample.py
dtype = 'bfloat16'
eval_interval = 5000
eval_iters = 60                 # 60 x 4 x 1024 = 246k val tokens, stratified t over the 240 sequences
log_interval = 50
