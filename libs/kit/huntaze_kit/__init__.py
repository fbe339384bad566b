"""Shared plumbing for every Huntaze service."""
