"""msgspec Structs for every Unleash wire shape, inbound and outbound."""
