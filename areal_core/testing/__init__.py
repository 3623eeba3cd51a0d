"""Contract test suites that every plugin of a kind reuses (subclass and set the fixtures)."""
