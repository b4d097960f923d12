"""Mechanics every geoloc service shares: settings, logging, the server factory, geodesy."""
