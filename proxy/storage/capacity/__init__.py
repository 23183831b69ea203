"""Keeping the store inside `max_db_size`: the page budget, the admission check and the overflow policy."""
