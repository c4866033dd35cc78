"""recursive-manager's shell: the ``rmgr`` command, HTTP, the SQLite store, the sandbox."""
