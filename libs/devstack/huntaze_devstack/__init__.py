"""Local development stack: embedded infrastructure, the process runner and code generation."""
