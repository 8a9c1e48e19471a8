"""The inventory service: the catalogue, prices and stock, moved only by reservations."""
