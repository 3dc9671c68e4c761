"""What the catalog rows do not say, as data: the tokenizer's vocabulary (NeMo sizes the embedding from
len(tokenizer) unless the config class sets vocab_size, as Qwen's does) and the parameter count Hugging Face
publishes for each model (the total of its safetensors, tied embeddings counted once)."""

# len(tokenizer) of each catalog model's tokenizer (Hugging Face tokenizer.json / config.json vocab_size).
VOCABULARY = {
    "tiny_llama": 4096,  # models/tokenizers/tiny/tokenizer.json: 4,096 entries (its 4 special tokens among them)
    "smollm2_135m": 49152,
    "llama32_1b": 128256,
    "llama32_3b": 128256,
    "llama31_8b": 128256,
    "llama31_70b": 128256,
    "mistral_7b": 32000,
    "qwen25_7b": 152064,  # Qwen25Config7B.vocab_size (the tokenizer has 151,665; the embedding has 152,064 rows)
}

# The parameter count on each model's Hugging Face page (safetensors total).
HUGGING_FACE_PARAMETERS = {
    "smollm2_135m": 134_515_008,  # HuggingFaceTB/SmolLM2-135M-Instruct
    "llama32_1b": 1_235_814_400,  # meta-llama/Llama-3.2-1B
    "llama32_3b": 3_212_749_824,  # meta-llama/Llama-3.2-3B
    "llama31_8b": 8_030_261_248,  # meta-llama/Llama-3.1-8B
    "llama31_70b": 70_553_706_496,  # meta-llama/Llama-3.1-70B
    "mistral_7b": 7_241_732_096,  # mistralai/Mistral-7B-v0.1
    "qwen25_7b": 7_615_616_512,  # Qwen/Qwen2.5-7B
}
