"""Campaigns: mass messages and pay-per-view offers, sequences, holdouts and variants."""
