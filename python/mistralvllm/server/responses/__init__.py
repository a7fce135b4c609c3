"""OpenAI's Responses API (`/v1/responses`): its request and response
bodies, its shape and stored responses on the serving layer, and its routes."""
