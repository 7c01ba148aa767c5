"""All rendering for the terminal (rich): facts, plans, runs and verify reports. No logic beyond presentation."""
