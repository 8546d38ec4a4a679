"""`kinrl compare`: every method trained under one budget from one SFT run, evaluated alike, and
a report (`pipeline.py` runs the cached stages, `presets.py` holds the presets and budgets,
`report.py` writes report.md, results.json and the plots)."""
