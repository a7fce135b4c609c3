"""Python functions to offer the model as tools in `mistralvllm chat`:

    mistralvllm chat --tool examples/tools.py:get_weather --tool-choice required

The name, the docstring's first paragraph and the annotated parameters
become the tool definition the model sees.
"""

from __future__ import annotations

# A fixed table stands in for a weather service: the demo works offline.
_WEATHER = {"paris": "sunny, 21 C", "london": "rain, 14 C", "tokyo": "cloudy, 18 C"}


def get_weather(city: str) -> str:
    """The current weather in a city."""
    return _WEATHER.get(city.strip().lower(), f"no weather report for {city}")


def add(a: float, b: float) -> float:
    """Add two numbers."""
    return a + b
