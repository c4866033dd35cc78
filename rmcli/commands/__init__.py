"""The commands of ``rmgr``, one module per family, imported only when their command runs."""
