"""Calling other services: where they are (discovery), the channels to them, the breaker.
"""
