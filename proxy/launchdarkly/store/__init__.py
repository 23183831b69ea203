"""The LaunchDarkly room's SQL: its resources (resources.py), its write queue's view of the shared
outbox (queue.py). Handlers reach it only through Store.read / Store.write / Store.on_writer."""
