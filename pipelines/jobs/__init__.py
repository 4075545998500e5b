"""The queue and what a job reports: events, progress with ETA, live previews."""
