"""Every prompt template EvoVLM uses, in one place.

The Japanese strings are data from the paper's published evaluation code
(SakanaAI/evolutionary-model-merge, ``evomerge/models/prompt_templates.py``) and must
stay byte-identical to it: scores are only comparable with the paper's under the same prompt.
Templates take one ``{input}`` field; for images the runner puts ``<image>\\n`` before the
question, as the paper's LLaVA wrapper does, so the same template serves text and VQA.
"""

from __future__ import annotations

from typing import Any

from evovlm.errors import EvoVLMError

# MGSM-JA (EvoLLM-JP): Japanese Alpaca instruction format with a chain-of-thought cue.
JA_ALPACA_COT = (
    "以下に、あるタスクを説明する指示があります。リクエストを適切に完了するための回答を日本語で記述してください。"
    "一歩一歩考えましょう。\n\n### 指示:\n{input}\n\n### 応答:"
)

# JA-VG-VQA-500 / JA-VLM-Bench-In-the-Wild (EvoVLM-JP): shisa-gamma's Llama-2 style system prompt.
JA_SHISA_VQA = (
    "[INST] <<SYS>>\nあなたは役立つ、偏見がなく、検閲されていないアシスタントです。"
    "与えられた画像を下に、質問に答えてください。\n<</SYS>>\n\n{input} [/INST]"
)

# LLaVA-1.6-Mistral's own format. The paper's string starts with a literal "<s>"; we leave it out
# because the tokenizer already adds BOS, and a second one changes the model's input.
LLAVA_MISTRAL = "[INST] {input} [/INST]"

PLAIN = "{input}"

TEMPLATES: dict[str, str] = {
    "ja-alpaca-cot": JA_ALPACA_COT,
    "ja-shisa-vqa": JA_SHISA_VQA,
    "llava-mistral": LLAVA_MISTRAL,
    "plain": PLAIN,
}  # plugins add theirs with register_template (the miniature zoo: zoo-qa)
# Not a string: render through the tokenizer's own chat template.
CHAT = "chat"

# The paper's vLLM stop list for MGSM: a model that starts a new "### Instruction/Response"
# turn has finished its answer.
ALPACA_STOP_STRINGS: tuple[str, ...] = ("Instruction:", "Instruction", "Response:", "Response")

IMAGE_PLACEHOLDER = "<image>"


def register_template(name: str, template: str) -> None:
    """Make ``name`` a prompt template (a string holding ``{input}``)."""
    if "{input}" not in template:
        raise ValueError(f"template {name!r} must contain {{input}}")
    TEMPLATES[name] = template


def template_names() -> list[str]:
    """Names accepted by :func:`build_prompt` (``chat`` included)."""
    from evovlm.plugins import load_plugins

    load_plugins()
    return [*TEMPLATES, CHAT]


def build_prompt(template: str, question: str, *, image_token: str | None = None, tokenizer: Any = None) -> str:
    """Render ``question`` (plus an image placeholder when ``image_token`` is given) with ``template``.

    ``template`` is a name from :data:`TEMPLATES`, ``chat`` (needs ``tokenizer`` with a chat
    template), or a literal string holding ``{input}``.
    """
    text = f"{image_token}\n{question}" if image_token else question
    if template == CHAT:
        if tokenizer is None or not getattr(tokenizer, "chat_template", None):
            raise EvoVLMError("template 'chat' needs a tokenizer with a chat template; this one has none")
        return tokenizer.apply_chat_template(
            [{"role": "user", "content": text}], tokenize=False, add_generation_prompt=True
        )
    if template not in TEMPLATES and "{input}" not in template:
        from evovlm.plugins import load_plugins

        load_plugins()
    body = TEMPLATES.get(template, template)
    if "{input}" not in body:
        raise EvoVLMError(
            f"unknown prompt template {template!r}: use one of {', '.join(template_names())} "
            "or a literal template containing {input}"
        )
    return body.replace("{input}", text)  # not str.format: questions and templates may hold braces


def template_emits_bos(template: str) -> bool:
    """Chat templates write BOS themselves, so their prompts are tokenized without special tokens."""
    return template == CHAT
