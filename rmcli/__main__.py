"""``python -m rmcli``: the same as ``rmgr``."""

from rmcli.app import main

main()
