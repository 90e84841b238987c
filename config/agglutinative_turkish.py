# Agglutinative (MorphBias) attention on Turkish: config/gpt_turkish.py with the attention changed.
# python train.py config/gpt_turkish.py config/agglutinative_turkish.py
out_dir = 'out-turkish-agglutinative'
attention = 'agglutinative'
