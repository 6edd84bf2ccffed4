"""What a run tells its user: the tables, the JSON report and the plot."""
