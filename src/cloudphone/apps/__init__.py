"""The apps service."""
