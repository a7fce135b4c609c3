"""OpenAI's chat and text completions (`/v1/chat/completions`,
`/v1/completions`): their request and response bodies, their shapes on the
serving layer, and their routes. Their requests are also what the other
APIs translate theirs into."""
