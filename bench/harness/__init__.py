"""The benchmark harness behind ``bench/run.py``: processes, systems under test, scenarios, the report."""
