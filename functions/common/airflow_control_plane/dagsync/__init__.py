"""DAG sync: publish a Git commit's DAG files into a DAGs folder, atomically and incrementally.

Layout of a target (the EFS mount on AWS, a local folder locally)::

    <target>/current            -> releases/<release id>   (the one symlink Airflow reads)
    <target>/releases/<id>/     one immutable, validated release per commit: top-level files, the
                                .release-manifest.json, and symlinks to its folders in trees/
    <target>/trees/<key>/       one immutable folder (Git tree id + path): unchanged folders are
                                shared between releases instead of rewritten
    <target>/.dagsync.lock      the NFS-safe lock: at most one sync per target
    <target>/.rollback-pin.json  holds an explicit rollback until a new commit lands
    <target>/.webhook-deliveries/<delivery id>   replay store of the webhook

Modules: ``decision`` (pure: publish / noop / refuse), ``git_source`` (dulwich fetch, resolve,
ancestry, trees), ``release`` (incremental build, validation, manifest), ``publish`` (atomic
symlink swap), ``retention`` (which releases to delete, and deleting them crash-safely),
``lock``, ``webhook``, ``events``, ``credentials``, ``service`` (one sync, end to end), ``local``
(wiring for the CLI and the local runtime) and ``airflow_bundle`` (the Airflow DAG bundle that
reads one resolved release per parse; imports Airflow, so only Airflow processes load it).
"""
