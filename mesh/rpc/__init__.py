"""gRPC's conventions, the same on the serving and the calling side.

status (the one status model) · softerrors · identity (the end user as metadata) · protoconv · tls.
"""
