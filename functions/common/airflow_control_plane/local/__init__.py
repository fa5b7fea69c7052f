"""The local runtime: the same bring-up and hibernate steps as on AWS, with real processes.

A background supervisor plays ECS (services with desired counts, restarts, graceful stop);
``afctl up`` / ``afctl down`` / ``afctl status`` drive it. All state lives in one folder
(``.local/`` at the repository root by default, ``AFCTL_STATE_DIR`` to move it).
"""
