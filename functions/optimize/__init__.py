"""optimize: a finished run's segments become subtitle-grade results in object storage."""
