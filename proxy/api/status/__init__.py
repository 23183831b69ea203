"""The operator status: the document every vendor room contributes a section to, its route, and the page at `/`."""
