// Placeholder: the lead writes the dashboard page script.
