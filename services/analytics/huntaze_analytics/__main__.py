"""`python -m huntaze_analytics [serve|migrate|rebuild]`: see `huntaze_analytics.server`."""

from huntaze_analytics.server import main

main()
