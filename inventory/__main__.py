"""`python -m inventory`: serve the inventory service with settings from the environment."""

from inventory.app import build
from mesh.server.bootstrap import main

if __name__ == "__main__":
    main("inventory", build)
