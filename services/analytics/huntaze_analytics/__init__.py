"""Analytics: rollups, fan insights and the dashboard from the events every service publishes."""
