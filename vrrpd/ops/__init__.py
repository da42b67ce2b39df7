"""What operators run beside the daemon: the command line, the status table, the keepalived importer."""
