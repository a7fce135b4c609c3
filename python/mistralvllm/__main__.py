"""`python -m mistralvllm` is the `mistralvllm` command."""

from .cli import main

if __name__ == "__main__":
    main()
