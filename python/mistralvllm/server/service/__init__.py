"""The service's own routes, whatever the client's API: health, metrics,
the model list and the web page (`system`), tokenize and detokenize
(`tokens`), and the stored conversations (`conversations`), with their
request and response bodies."""
