"""The notification service: one message per event, listed and streamed live per user."""
