"""Shootr: the jobqueue demo, a screenshot service that takes pictures of web pages in workers."""
