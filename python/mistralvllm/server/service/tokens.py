"""`POST /tokenize` and `POST /detokenize`, in vLLM's shape."""

from __future__ import annotations

from fastapi import APIRouter, Depends

from ..api_error import engine_errors
from ..deps import Service, require_key
from ..openai.bodies import ErrorBody
from .bodies import Detokenized, Tokenized
from .requests import DetokenizeRequest, TokenizeRequest

router = APIRouter(dependencies=[Depends(require_key)], responses={"4XX": {"model": ErrorBody}, "5XX": {"model": ErrorBody}})


@router.post("/tokenize", response_model=Tokenized)
async def tokenize(body: TokenizeRequest, state: Service) -> Tokenized:
    """Token ids of a raw ``prompt``, or of ``messages`` after the chat template."""
    async with state.session_for(body.model) as session:
        if body.messages is not None:
            messages = [{"role": m.role, "content": m.text()} for m in body.messages]
            generation_prompt, special = body.add_generation_prompt, body.add_special_tokens
            tokens = await session.off_loop(
                engine_errors, lambda: session.tokenize(messages, add_generation_prompt=generation_prompt, add_special_tokens=special)
            )
        else:
            add_special = True if body.add_special_tokens is None else body.add_special_tokens
            tokens = await session.off_loop(engine_errors, lambda: session.tokenize(prompt=body.prompt, add_special_tokens=add_special))
        return Tokenized(count=len(tokens), max_model_len=session.context_length, tokens=tokens, token_strs=None)


@router.post("/detokenize", response_model=Detokenized)
async def detokenize(body: DetokenizeRequest, state: Service) -> Detokenized:
    """The text of ``tokens``."""
    async with state.session_for(body.model) as session:
        text = await session.off_loop(engine_errors, lambda: session.detokenize(body.tokens))
    return Detokenized(prompt=text)
