"""The order service: places orders against inventory's stock and prices, tells the user."""
