"""The operations dashboard: the Django project (settings, routing) and the product (views, live feed, audit)."""
