# MDLM + importance-aware masking (ATAT): config/mdlm.py with the importance flags on (estimator 2 x 256, 4 heads:
# the model defaults). The training loss is then a weighted objective; val_loss stays the plain NELBO.
# python train.py config/mdlm.py config/mdlm_atat.py
out_dir = 'out-wiki-mdlm-atat'
importance = True
adaptive_masking = True
curriculum = True               # easy -> hard
