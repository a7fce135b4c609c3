"""Ollama's API (`/api/`): its request and response bodies, its shapes on
the serving layer, its model details, and its routes."""
