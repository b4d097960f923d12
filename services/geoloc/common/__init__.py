"""The gRPC runtime every geoloc service shares: settings, logging, the server factory, channels, admission, errors."""
