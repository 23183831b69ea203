"""The resources themselves, apart from HTTP and SQL: the rules a posted body obeys and the
representations built from it, as stored and answered."""
