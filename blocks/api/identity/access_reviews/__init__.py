"""Access review routes: an organization's review settings, starting a review, reading one and
its CSV report (routes.py), and their request and answer shapes (schemas.py)."""
