"""Prefect flows, the Ray runner, schedules: the only code that imports prefect or ray.

Importing this package registers the stages that are Ray by nature (their code lives here, not in tasks/).
It imports neither prefect nor ray itself.
"""

from tasks import TaskDef, register

register(TaskDef(  # Ray Tune by nature (see flows/asha.py)
    name="asha",
    module="flows.asha",
    inputs=("allocation", "selection", "jobs"),
    outputs=("asha",),
    entry={"run": "run"},
))
