"""msgspec Structs for everything that crosses the wire."""
