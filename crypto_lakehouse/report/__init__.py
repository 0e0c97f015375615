"""The ``report`` target: one self-contained HTML page about a run (docs/report.md).

``coverage`` builds the per (trade type, symbol, day) source table, ``records`` reads the
quality, quarantine, summary and benchmark records, ``figures`` draws with matplotlib (Agg),
``page`` assembles the HTML, and ``job.run_report`` ties them together.
"""
