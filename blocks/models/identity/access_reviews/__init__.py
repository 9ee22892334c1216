"""Access review data: reviews and their settings (reviews.py) and the items a review lists and
revokes (items.py)."""
