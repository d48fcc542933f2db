"""The installed version of prnf (``pyproject.toml``'s ``version``, read from the package
metadata), in a module of its own so that any module can import it without importing the
package ``prnf_core`` (whose ``__init__`` imports most modules)."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("prnf")
except PackageNotFoundError:  # running from a source tree that is not installed
    __version__ = "0.0.0+unknown"
