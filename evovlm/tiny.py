"""Tiny random models with real architectures, for tests and offline examples.

They share one character-level tokenizer (ASCII, kana, digits, a few kanji) and
Mistral-shaped language models, so a tiny "Japanese LLM" can be merged into a tiny
Llava or LlavaNext language tower exactly like the real EvoVLM-JP case. The weights
are random: these models prove plumbing, not skills (the zoo has skills).

    python -m evovlm.tiny OUT_DIR     # writes base/, ja/, math/, llava/, llava-next/
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch

IMAGE_TOKEN = "<image>"
_SPECIALS = ["<unk>", "<s>", "</s>", "<pad>", IMAGE_TOKEN]
_CHARS = ([chr(c) for c in range(32, 127)] + [chr(c) for c in range(0x3041, 0x3097)]
          + [chr(c) for c in range(0x30A1, 0x30FB)] + list("日本語画像数学答え一二三四五六七八九十円個赤青緑色何")
          + ["\n", "。", "、", "？", "！", "「", "」"])


def tiny_tokenizer(extra_chars: str = ""):
    """A char-level fast tokenizer with bos/eos/pad and an <image> token (plus ``extra_chars``)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {token: index for index, token in enumerate(_SPECIALS + list(dict.fromkeys(_CHARS + list(extra_chars))))}
    backend = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.Split(pattern="", behavior="isolated")
    backend.decoder = decoders.Fuse()
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=backend, bos_token="<s>", eos_token="</s>",
                                        unk_token="<unk>", pad_token="<pad>",
                                        additional_special_tokens=[IMAGE_TOKEN])
    tokenizer.add_bos_token = True
    return tokenizer


def tiny_text_config(vocab_size: int, *, hidden: int = 32, layers: int = 2, architecture: str = "mistral"):
    from transformers import LlamaConfig, MistralConfig

    config_class = MistralConfig if architecture == "mistral" else LlamaConfig
    return config_class(hidden_size=hidden, intermediate_size=hidden * 2, num_hidden_layers=layers,
                        num_attention_heads=4, num_key_value_heads=2, vocab_size=vocab_size,
                        max_position_embeddings=512, bos_token_id=1, eos_token_id=2, pad_token_id=3,
                        tie_word_embeddings=False)


def tiny_causal_lm(seed: int, *, vocab_size: int | None = None, architecture: str = "mistral", **kwargs):
    from transformers import AutoModelForCausalLM

    torch.manual_seed(seed)
    vocab_size = vocab_size or len(tiny_tokenizer())
    return AutoModelForCausalLM.from_config(tiny_text_config(vocab_size, architecture=architecture, **kwargs))


def perturbed_copy(model, seed: int, scale: float = 0.02):
    """A 'fine-tune' of ``model``: the same weights plus seeded noise (a synthetic task vector)."""
    import copy

    generator = torch.Generator().manual_seed(seed)
    tuned = copy.deepcopy(model)
    with torch.no_grad():
        for parameter in tuned.parameters():
            parameter.add_(torch.randn(parameter.shape, generator=generator) * scale)
    return tuned


def tiny_vlm(seed: int, language_model=None, *, next_variant: bool = False, extra_rows: int = 8):
    """A tiny Llava (or LlavaNext) whose language tower copies ``language_model`` (vocab grown by ``extra_rows``)."""
    from transformers import (
        CLIPVisionConfig,
        LlavaConfig,
        LlavaForConditionalGeneration,
        LlavaNextConfig,
        LlavaNextForConditionalGeneration,
    )

    tokenizer = tiny_tokenizer()
    vocab_size = len(tokenizer) + extra_rows  # like LLaVA-1.6-Mistral's 32064 vs 32000 rows
    text_config = tiny_text_config(vocab_size)
    vision_config = CLIPVisionConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=4,
                                     image_size=32, patch_size=8, projection_dim=32)
    image_token_id = tokenizer.convert_tokens_to_ids(IMAGE_TOKEN)
    torch.manual_seed(seed)
    if next_variant:
        config = LlavaNextConfig(text_config=text_config, vision_config=vision_config, image_token_index=image_token_id,
                                 image_grid_pinpoints=[[32, 32], [32, 64], [64, 32]],
                                 vision_feature_select_strategy="default", vision_feature_layer=-1)
        model = LlavaNextForConditionalGeneration(config)
    else:
        config = LlavaConfig(text_config=text_config, vision_config=vision_config, image_token_index=image_token_id,
                             vision_feature_select_strategy="default", vision_feature_layer=-1)
        model = LlavaForConditionalGeneration(config)
    if language_model is not None:
        copy_language_tower(model, language_model)
    return model


@torch.no_grad()
def copy_language_tower(vlm, language_model) -> None:
    """Copy a causal LM's weights into a VLM's language tower (the rows both vocabularies share)."""
    from evovlm.arch import CAUSAL_LM, VLM_MEMORY

    source = language_model.state_dict()
    for name, parameter in vlm.state_dict().items():
        canonical = VLM_MEMORY.to_canonical(name)
        if canonical is None or CAUSAL_LM.to_native(canonical) not in source:
            continue
        value = source[CAUSAL_LM.to_native(canonical)]
        rows = min(value.shape[0], parameter.shape[0])
        parameter[:rows].copy_(value[:rows])


def tiny_processor(next_variant: bool = False):
    from transformers import CLIPImageProcessorPil, LlavaNextImageProcessorPil, LlavaNextProcessor, LlavaProcessor

    tokenizer = tiny_tokenizer()
    chat_template = ("{% for message in messages %}{% if message['role'] == 'user' %}[INST] "
                     "{% for item in message['content'] %}{% if item['type'] == 'image' %}<image>\n"
                     "{% else %}{{ item['text'] }}{% endif %}{% endfor %} [/INST]"
                     "{% else %}{% for item in message['content'] %}{{ item['text'] }}{% endfor %}{% endif %}"
                     "{% endfor %}")
    size = {"shortest_edge": 32}
    crop = {"height": 32, "width": 32}
    if next_variant:
        image_processor = LlavaNextImageProcessorPil(size=size, crop_size=crop,
                                                  image_grid_pinpoints=[[32, 32], [32, 64], [64, 32]])
        return LlavaNextProcessor(image_processor=image_processor, tokenizer=tokenizer, patch_size=8,
                                  vision_feature_select_strategy="default", image_token=IMAGE_TOKEN,
                                  num_additional_image_tokens=1, chat_template=chat_template)
    image_processor = CLIPImageProcessorPil(size=size, crop_size=crop)
    return LlavaProcessor(image_processor=image_processor, tokenizer=tokenizer, patch_size=8,
                          vision_feature_select_strategy="default", image_token=IMAGE_TOKEN,
                          num_additional_image_tokens=1, chat_template=chat_template)


def build_tiny_family(out_dir: str | Path) -> dict[str, Path]:
    """base, two 'fine-tunes' of it (ja, math) and Llava/LlavaNext VLMs built on ja's sibling."""
    out_dir = Path(out_dir)
    tokenizer = tiny_tokenizer()
    base = tiny_causal_lm(0)
    family = {"base": base, "ja": perturbed_copy(base, 1), "math": perturbed_copy(base, 2)}
    paths = {}
    for name, model in family.items():
        paths[name] = out_dir / name
        model.save_pretrained(paths[name])
        tokenizer.save_pretrained(paths[name])
    vlm_language = perturbed_copy(base, 3)  # the VLM's language tower is another fine-tune of base
    for name, next_variant in (("llava", False), ("llava-next", True)):
        paths[name] = out_dir / name
        tiny_vlm(10 + next_variant, vlm_language, next_variant=next_variant).save_pretrained(paths[name])
        tiny_processor(next_variant).save_pretrained(paths[name])
    return paths


def main(argv: list[str] | None = None) -> int:
    import argparse

    parser = argparse.ArgumentParser(prog="python -m evovlm.tiny", description=__doc__.split("\n\n")[0])
    parser.add_argument("out_dir", nargs="?", default="tiny-models", metavar="OUT_DIR",
                        help="folder to write base/, ja/, math/, llava/, llava-next/ into (default: tiny-models)")
    args = parser.parse_args(argv)
    for name, path in build_tiny_family(args.out_dir).items():
        print(f"{name}: {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
