"""Celery worker autoscaling with scale-to-zero that never kills a running task.

Read (demand from the metadata database and the broker, worker services from ECS or the
local runtime), decide (:mod:`.policy`, a pure function of its inputs and the time), act
(:mod:`.service`). The simulation (:mod:`.simulate`) replays a task trace through the same
policy. Worker-side scale-in protection lives in :mod:`.protection`.
"""
