"""`kinrl serve`: a local web app to explore kinship puzzles, compare trained runs blind, and
collect human preference votes that `kinrl train dpo|rm` consumes (`kinrl labels export`).

    store.py    the SQLite store of puzzles, battles and votes (WAL, schema version, migrations)
    tree.py     the family graph laid out for drawing (generations, couples side by side)
    runs.py     what answers: trained runs (JAX, loaded lazily) and the two baselines
    ranking.py  Bradley-Terry ratings with bootstrap intervals; human-vs-gold agreement
    export.py   votes -> preference records -> a dataset folder (through `tasks/io.py`)
    app.py      the FastAPI app: the JSON API and the page
    command.py  the `kinrl serve` and `kinrl labels export` commands (cheap to import)
    static/     the page: plain HTML, CSS and JavaScript, no build step

Only `command.py` is imported by `kinrl --help`; FastAPI, uvicorn and JAX are imported when a
command that needs them runs.
"""
