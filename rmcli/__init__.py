"""recursive-manager's shell: the ``rmgr`` command, HTTP, the SQLite store, the sandbox."""

__version__ = "0.1.0"
