"""Test support written once: fakes of the services' ports, shared by the tiers."""
