"""Anthropic's Messages API (`/v1/messages`): its request and response
bodies, its shape on the serving layer, and its routes."""
