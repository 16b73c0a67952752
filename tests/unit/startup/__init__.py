"""Apps and settings for tests that start Django in a process of their own (what a project
with these apps installed would see at start)."""
