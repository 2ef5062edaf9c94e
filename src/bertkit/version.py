"""The package version, importable from anywhere in bertkit without importing the package's public API."""

__version__ = "0.1.0"
