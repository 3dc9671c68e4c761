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
    "qwen3_8b": 8_190_735_360,  # Qwen/Qwen3-8B
    "qwen3_30b_a3b": 30_532_122_624,  # Qwen/Qwen3-30B-A3B
    "mixtral_8x7b": 46_702_792_704,  # mistralai/Mixtral-8x7B-v0.1
    "llama2_7b": 6_738_415_616,  # meta-llama/Llama-2-7b-hf
}
