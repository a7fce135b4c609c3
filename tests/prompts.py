"""Questions the 135M default model answers correctly (greedy) in every engine
(see ../shared/notes/models.md); "capital of France" is one it gets wrong."""

ITALY = [{"role": "user", "content": "What is the capital of Italy? Answer in one word."}]
WATER = [{"role": "user", "content": "What is the chemical symbol for water?"}]
HOT = [{"role": "user", "content": "What is the opposite of hot?"}]

# A tool in OpenAI's shape, for the tool-calling tests of every API.
WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "The current weather in a city.",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
    },
}
