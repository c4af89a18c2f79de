"""Prefect task adapters over molfed functions: names, retries, no result persistence, nothing else."""
