"""The CRM service."""
