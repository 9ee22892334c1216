"""Signing up and in, under `/v1/auth` and `/auth`: sign-up by emailed link (signup.py), sign-in by
password, emailed link and second factor with the organization picker and sign-out (sign_in.py),
what they share (support.py: request bodies, answers, the emailed links), password reset
(password_reset.py) and the HTML pages behind every emailed link (link_pages.py)."""
