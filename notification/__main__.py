"""`python -m notification`: serve the notification service with settings from the environment."""

from mesh.server.bootstrap import main
from notification.app import build

if __name__ == "__main__":
    main("notification", build)
