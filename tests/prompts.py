"""Questions the 135M default model answers correctly (greedy) in every engine
(see ../shared/notes/models.md); "capital of France" is one it gets wrong."""

ITALY = [{"role": "user", "content": "What is the capital of Italy? Answer in one word."}]
WATER = [{"role": "user", "content": "What is the chemical symbol for water?"}]
HOT = [{"role": "user", "content": "What is the opposite of hot?"}]
