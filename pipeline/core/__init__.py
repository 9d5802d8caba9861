"""What every stage runs: the command line, the parameter schema, errors, file helpers, paths
and the multi-process launcher."""
