"""The Unleash room: its client and admin APIs, wire schemas, store queries, upstream forwarding and feature serving."""
