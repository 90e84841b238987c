# Atlas (deep Omega-rule memory + sliding-window attention, MAG): config/gpt_shakespeare.py with the memory.
# python prepare/literature.py && python train.py config/gpt_shakespeare.py config/atlas_shakespeare.py
out_dir = 'out-atlas-en-balanced'
arch = 'atlas'
mem_key_dim = 16                # phi_2 of a 16-dim key: C(18, 2) = 153 features
mem_hidden = 64
mem_chunk = 32
mem_muon_scope = 'chunk'        # one Newton-Schulz per chunk, not per token (docs/atlas.md: ~9x fewer FLOPs); per
                                # token it needs activation checkpointing (~70 GB at 32 x 512 without, estimated)
mem_lr = 0.05                   # NS bounds each write (spectral norm <= eta): Muon tolerates 5x the CPU config's
