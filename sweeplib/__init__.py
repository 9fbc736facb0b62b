"""Library code of the distribution sweep (the scripts at the top level call into it)."""
