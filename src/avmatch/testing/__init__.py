"""Fixtures that tests and benchmarks import: media in the forms users bring (see :mod:`.formats`)."""
