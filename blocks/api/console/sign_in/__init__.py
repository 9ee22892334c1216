"""Console sign-in: the pages (`pages`: password, emailed link, second factor, the
organization picker, SSO), the session pages (`sessions`) and what they share (`flow`)."""
