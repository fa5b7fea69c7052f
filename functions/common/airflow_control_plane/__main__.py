from airflow_control_plane.cli import main

main()
