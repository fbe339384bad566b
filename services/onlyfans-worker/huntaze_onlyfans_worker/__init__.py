"""The OnlyFans worker: the platform driver, the credential vault, sync and sends."""
