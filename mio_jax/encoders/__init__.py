"""MIO's tokenizer encoders in JAX: SEED-Tokenizer (EVA ViT-g/14, causal Q-Former, VQ) and
SpeechTokenizer (SEANet, BiLSTM, residual VQ), reading the safetensors directories the torch
adapters in data_pipelines/tokenizers use: one set of weights, two runtimes."""
