"""The package version, in a module of its own so that the engine can note it without importing the package's
public names (which reach every layer)."""
__version__ = "0.1.0"
