# MDLM + importance-aware masking (ATAT) on WikiText-103: config/mdlm.py with the importance flags on, reproducing the original 6-GPU run (seed 001): DiT 12 x 768, 12 heads,
# context 1024, 24 sequences per step (as 4 per GPU x 6 GPUs), lr 1e-4 with warm-up and cosine decay, 50k steps, bf16,
# eval every 5k steps; sample with 128 steps (sample.py's default).
# one GPU:  python prepare/wikitext103.py && python train.py config/mdlm_atat.py   (the 24 sequences in one micro-batch)
# 6 GPUs:   torchrun --standalone --nproc_per_node=6 train.py config/mdlm_atat.py --batch_size=4 --gradient_accumulation_steps=6
# The training loss is then a weighted objective (logged as loss_name); val_loss stays the plain NELBO.
out_dir = 'out-wiki-mdlm-atat'
dataset = 'wikitext103'
arch = 'mdlm'
vocab_size = 50304              # GPT-2's 50257 ids + the [MASK] train.py adds (50257), padded to a multiple of 64;
                                # with a trained BPE (prepare's offline fallback) use --vocab_size=0 (its own size)
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
# importance-aware options (ATAT): estimator 2 x 256, 4 heads (model defaults), adaptive masking, easy->hard curriculum
importance = True
adaptive_masking = True
curriculum = True
# one 80 GB GPU holds the 24 sequences in one micro-batch: ~3.4 GB of fp32 weights, gradients, AdamW and EMA
# (170M parameters x 20 bytes) + ~1.1 GB of activations per sequence under bf16 autocast with flash attention
# (~40 bytes x T x d per layer x 12 layers = 0.38 GB, plus the (T, V) logits in bf16, fp32 and their log-softmax
# = 0.6-0.7 GB) = ~30 GB (an estimate, not measured: no GPU here); 4 per micro-batch would use a GPU's width poorly
batch_size = 24
gradient_accumulation_steps = 1 # in total over the processes (tokens per step: 24 x 1024, as the original)
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
eval_iters = 10                 # 10 x 24 x 1024 = 246k val tokens, stratified t over the 240 sequences
log_interval = 50
compile = True                  # torch.compile (a GPU config); --compile=False for eager
