"""recursive-manager's shell: the ``rmgr`` command, HTTP, the SQLite store, the sandbox.

The embedding API (``ask``, ``analyze``, ``compare``, ``health``, ``create``) lives in
``rmcli.api``: ``from rmcli import api``. This package itself imports nothing heavy, so that
``import rmcli`` (and ``rmgr --help``) stays fast. See docs/embedding.md.
"""

__version__ = "0.1.0"

__all__ = ["__version__"]
