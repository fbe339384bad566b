"""A faithful local stand-in for the OnlyFans web platform, for tests and the demo."""
