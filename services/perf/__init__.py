"""Performance analysis views shared by the CLI (`eunomia top`, `eunomia profile`) and the API:
per-container tables from the probes' eunomia.perf.<node> messages, and profile formats."""
