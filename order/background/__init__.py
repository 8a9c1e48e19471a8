"""Order's background work, in one place: what every instance does while it serves.

    outbox.py    the relay: delivers the events stored with orders to notification, in batches
    recovery.py  settles what a crash or an outage left half-done, and records finished sales
"""
