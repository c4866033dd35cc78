"""``rmgr serve``: an OpenAI- and Anthropic-compatible gateway over the policy, on the same
``rmcli.api`` front door as the command line.

A plain ASGI application (``app``), served by uvicorn with httptools: ``keys`` checks the
clients' keys, ``dialects`` reads requests and writes answers in each API's shape
(``openai_format``, ``anthropic_format``), ``relay`` streams an answer with the right conduct
under faults, ``asgi`` holds the few ASGI pieces needed without a web framework.
"""
