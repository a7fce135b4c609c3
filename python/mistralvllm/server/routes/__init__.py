"""One router per API surface: chat and text completions, stored
conversations, and the service's own routes (health, metrics, models, the
web page)."""
