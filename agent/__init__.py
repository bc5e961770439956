"""The service people talk to: HTTP API, CLI and the per-agent runtime."""
