"""The AI agent: reply suggestions and autopilot in the creator's voice."""
