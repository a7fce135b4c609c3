"""Thinking models: whether a model's answers carry reasoning apart from the
text, decided from its chat template as the engine decides where to look for
it (mistral.rs's reasoning parsers): ``<think>`` tags (Qwen3, DeepSeek-R1
distills, SmolLM3), Gemma 4's channel tags, or gpt-oss's harmony channels."""

from __future__ import annotations

THINK_TAGS = ("<think>", "</think>")
CHANNEL_TAGS = ("<|channel>", "<channel|>")
HARMONY_CHANNEL = "<|channel|>"


def template_thinks(chat_template: str | None) -> bool:
    """Whether a model with ``chat_template`` thinks before it answers."""
    if not chat_template:
        return False
    return all(tag in chat_template for tag in THINK_TAGS) or all(tag in chat_template for tag in CHANNEL_TAGS) or HARMONY_CHANNEL in chat_template
