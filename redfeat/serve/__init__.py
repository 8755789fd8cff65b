"""L4: the HTTP API and web page, the CLI and the demo. Nothing below imports it."""
