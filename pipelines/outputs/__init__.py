"""What a job leaves behind: image files with their metadata, and the history index."""
