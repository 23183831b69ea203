"""HTTP handlers of the Unleash client, frontend and admin APIs."""
