"""The page's machinery: widgets by name, rendering a form, event wiring, following a job, thumbnails."""
