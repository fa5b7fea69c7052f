"""Environment bring-up and hibernate: the step order, shared by AWS and local runs."""
