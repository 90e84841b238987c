# MDLM (Sahoo et al. 2024) on WikiText-103, the original 6-GPU run (seed 001): DiT 12 x 768, 12 heads, context 1024,
# 24 sequences per step, lr 1e-4 with warm-up and cosine decay, 50k steps, bf16, eval every 5k steps. The base of
# config/mdlm_atat.py and config/mdlm_owt.py (name it first); 6 GPUs: --batch_size=4 --gradient_accumulation_steps=6
out_dir = 'out-wiki-mdlm'
dataset = 'wikitext103'
arch = 'mdlm'
vocab_size = 50304              # GPT-2's 50257 ids + the [MASK] train.py adds (50257), padded to a multiple of 64;
                                # with a trained BPE (prepare's offline fallback) use --vocab_size=0 (its own size)
n_layer = 12
n_head = 12
n_embd = 768
block_size = 1024
dropout = 0.1
bias = False                    # MDLM's DiT: qkv / out projections and LayerNorm without bias
pos = 'rope'
# one 80 GB GPU holds the 24 sequences in one micro-batch (~30 GB estimated, not measured: 170M parameters x 20
# bytes of weights, gradients, AdamW and EMA + ~1.1 GB of bf16 activations and (T, V) logits per sequence);
# 4 per micro-batch would use a GPU's width poorly
batch_size = 24
max_iters = 50000
learning_rate = 1e-4
min_lr = 1e-5
warmup_iters = 2500             # MDLM's warm-up length
weight_decay = 0.0              # MDLM: AdamW, wd 0, betas (0.9, 0.999)
beta2 = 0.999
ema_decay = 0.9999              # MDLM: EMA of the weights, used by evaluate.py / sample.py
dtype = 'bfloat16'
eval_interval = 5000
eval_iters = 10                 # 10 x 24 x 1024 = 246k val tokens, stratified t over the 240 sequences
log_interval = 50
compile = True
