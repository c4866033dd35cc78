"""recursive-manager's pure core: policies, wire formats, the fail-over engine, pricing.

Values in, values out: nothing here opens a socket or a file, reads a clock or the environment,
or draws a random number of its own. Time, jitter seeds and observations are arguments.
"""
