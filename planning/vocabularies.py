"""What planning reads beside the catalog rows: the vocabulary (the rows' vocab_size) and the parameter count
Hugging Face publishes for each model (the total of its safetensors, tied embeddings counted once)."""

from models.catalog import MODELS

# The embedding's rows of each catalog model (models/catalog.py).
VOCABULARY = {name: spec.vocab_size for name, spec in MODELS.items()}

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
