"""What every stage writes down and shows while it works: the results contract (``results.json`` records, their
fields and the summary table) and the progress bars. It sits low, beside ``config``: features, heads, scoring
and the commands all use it, and it imports nothing of theirs (``tests/test_layers.py``)."""
