"""Tiny random models built from configs (no hub), shared by the tests (import as `from tiny_models import ...`;
a module named conftest would clash with the per-directory conftest.py files)."""
import torch

# hidden sizes are multiples of 128 so the g128 presets divide every in_features.
TINY = dict(hidden=128, inter=256, layers=2, heads=4, vocab=120)


def tiny_bert():
    from transformers import BertConfig, BertModel
    torch.manual_seed(0)
    return BertModel(BertConfig(vocab_size=TINY["vocab"], hidden_size=TINY["hidden"], num_hidden_layers=TINY["layers"],
                                num_attention_heads=TINY["heads"], intermediate_size=TINY["inter"])).eval()


def tiny_gpt2():
    from transformers import GPT2Config, GPT2LMHeadModel
    torch.manual_seed(0)
    return GPT2LMHeadModel(GPT2Config(vocab_size=TINY["vocab"], n_embd=TINY["hidden"], n_layer=TINY["layers"],
                                      n_head=TINY["heads"], bos_token_id=0, eos_token_id=0)).eval()


def tiny_llama():
    from transformers import LlamaConfig, LlamaForCausalLM
    torch.manual_seed(0)
    return LlamaForCausalLM(LlamaConfig(vocab_size=TINY["vocab"], hidden_size=TINY["hidden"],
                                        num_hidden_layers=TINY["layers"], num_attention_heads=TINY["heads"],
                                        num_key_value_heads=2, intermediate_size=TINY["inter"],
                                        tie_word_embeddings=True)).eval()


def tiny_vit():
    from transformers import ViTConfig, ViTForImageClassification
    torch.manual_seed(0)
    return ViTForImageClassification(ViTConfig(image_size=32, patch_size=8, hidden_size=TINY["hidden"],
                                               num_hidden_layers=TINY["layers"], num_attention_heads=TINY["heads"],
                                               intermediate_size=TINY["inter"], num_labels=3)).eval()


MODELS = {"bert": tiny_bert, "gpt2": tiny_gpt2, "llama": tiny_llama}

