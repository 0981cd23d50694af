"""A fleet of bins seen from one place: what they say on the broker, and staged rollouts."""
