"""The shared runtime of every shopmesh service, written once.

settings · logs · errors (plain exceptions) · status (the one error table) ·
db · discovery · channels · server · paging · money · launcher (the local mesh).
"""
