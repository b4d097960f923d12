"""Mechanics every geoloc service shares: settings, logging, the server factory, sphere maths and S2 cells."""
