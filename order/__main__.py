"""`python -m order`: serve the order service with settings from the environment."""

from mesh.server.bootstrap import main
from order.app import build

if __name__ == "__main__":
    main("order", build)
