# MDLM (Sahoo et al. 2024) on OpenWebText: the original study's production run. DiT 12 x 768, 12 heads, context
# 1024, GPT-2 BPE (+ the [MASK] train.py adds at id 50257), 500k steps on 6 GPUs, lr 3e-4 constant after a 2.5k-step
# linear warm-up, AdamW betas (0.9, 0.999), wd 0, dropout 0.1, bf16, EMA 0.9999, validation every 10k steps.
# The paper's batch is 512 x 1024; 512 is not a multiple of 6 processes, so the global batch here is
# 12 per GPU x 7 micro-steps x 6 GPUs = 504 sequences (1.6% fewer tokens per step than 512).
# python prepare/openwebtext.py && torchrun --standalone --nproc_per_node=6 train.py config/mdlm_owt.py
out_dir = 'out-owt-mdlm'
dataset = 'openwebtext'
arch = 'mdlm'
vocab_size = 50304              # 50257 GPT-2 ids + [MASK], padded to a multiple of 64
n_layer = 12
n_head = 12
n_embd = 768
block_size = 1024
cond_dim = 128
dropout = 0.1
bias = False
norm = 'layernorm'
mlp = 'gelu'
pos = 'rope'
time_cond = False
importance = False
adaptive_masking = False
curriculum = False
batch_size = 12
gradient_accumulation_steps = 42  # in total over the processes: 6 GPUs x 7
max_iters = 500000
learning_rate = 3e-4
min_lr = 3e-4                   # = learning_rate: constant after the warm-up (the cosine between equal ends)
warmup_iters = 2500
weight_decay = 0.0
beta2 = 0.999
grad_clip = 1.0
ema_decay = 0.9999
dtype = 'bfloat16'
compile = True
eval_interval = 10000
eval_iters = 20                 # 20 x 504 x 1024 = 10.3M val tokens per evaluation
log_interval = 100
