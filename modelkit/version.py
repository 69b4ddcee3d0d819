"""The package version: a leaf, so any module (the CLI, the registry's User-Agent) can
import it without importing the package's API."""

__version__ = "0.1.0"
