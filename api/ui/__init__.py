"""The operator page at /ui/ (pages.py): plain HTML, CSS and JavaScript in static/, with no build step."""
