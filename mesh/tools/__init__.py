"""Developer tools, not runtime: the local launcher, free ports, test-only fault injection.
"""
