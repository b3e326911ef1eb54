"""Tests of ``fastconv bench`` (a package, so that its file names may repeat elsewhere in tests/)."""
