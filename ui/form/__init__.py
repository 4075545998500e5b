"""The form as named values: its mapping to requests, presets, sizes, performance modes."""
