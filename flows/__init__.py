"""Prefect flows, the Ray runner and schedules: the only code that imports prefect or ray."""
