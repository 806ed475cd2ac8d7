"""Published reference numbers shipped as data."""
