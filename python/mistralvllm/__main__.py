"""`python -m mistralvllm chat [--model PATH] [--system TEXT]`."""

from __future__ import annotations

import argparse
import sys

from .chat import chat_loop
from .errors import MistralVllmError
from .session import Session


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="mistralvllm", description="Chat with a local model on mistral.rs.")
    commands = parser.add_subparsers(dest="command", required=True)
    chat = commands.add_parser("chat", help="interactive streaming chat")
    chat.add_argument("--model", help="a .gguf file or a Hugging Face model directory (default: bundled SmolLM2-135M-Instruct)")
    chat.add_argument("--system", help="system prompt")
    args = parser.parse_args(argv)
    try:
        print("loading model ...", file=sys.stderr, flush=True)
        with Session(args.model) as session:
            info = session.info()
            print(f"{info['model']} ({info['architecture']}, {info['num_layers']} layers, {info['device']}); /exit to quit", file=sys.stderr)
            chat_loop(session, system=args.system)
    except MistralVllmError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
