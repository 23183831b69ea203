"""The usage ledger: what SDKs reported, merged in memory and folded into the tables (counts per environment, app, flag and hour; SDK instances; impact metrics), and how long it is kept."""
