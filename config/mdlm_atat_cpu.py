# MDLM + importance-aware masking (ATAT) at CPU size: config/mdlm_cpu.py with the importance flags on (equal compute).
# python train.py config/mdlm_cpu.py config/mdlm_atat_cpu.py
out_dir = 'out-wiki-mdlm-atat-cpu'
importance = True
adaptive_masking = True
curriculum = True
